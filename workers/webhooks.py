"""Webhook delivery: a signed POST to the job's `callback_url` when it ends.

Signature: `X-Squeeze-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the tenant's
webhook secret>` and `X-Squeeze-Timestamp: <unix seconds>`; receivers recompute it and reject old
timestamps. Every attempt is recorded; failures are retried with exponential back-off."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

from app.store.callback_urls import Unresolvable, resolve
from app.store.config import get_settings
from app.store.db import session_scope
from app.store.tables.auth import Tenant
from app.store.tables.jobs import Job, WebhookDelivery
from workers.compression.contract.report import STORED_RESULTS, Report
from workers.compression.contract.webhook import ErrorInfo, FinishedJob, JobFinished


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def payload(job: Job) -> JobFinished:
    # a failed job keeps what it still measured: its best candidate is its `final` too
    results = STORED_RESULTS.validate_python(job.results) if job.results else None
    return JobFinished(
        job=FinishedJob(
            id=job.id,
            name=job.name,
            status=job.status,
            error=ErrorInfo(code=job.error_code, message=job.error_message or "") if job.error_code else None,
            final=results.final if isinstance(results, Report) else None,
            finished_at=job.finished_at,
            url=f"/v1/jobs/{job.id}",
        )
    )


def deliver(job_id: str, attempt: int) -> bool:
    """One attempt; True when the receiver answered 2xx."""
    settings = get_settings()
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not job.callback_url:
            return True
        secret = session.get(Tenant, job.tenant_id).webhook_secret
        url, body = job.callback_url, payload(job).model_dump_json().encode()
    timestamp = str(int(time.time()))
    status = None
    target, error = resolve(url, settings.webhook_allow_private)
    if error:
        # a host that now resolves to a private address is refused for good; one that does not resolve
        # at the moment is retried like any failed delivery
        with session_scope() as session:
            session.add(WebhookDelivery(job_id=job_id, attempt=attempt, url=url, error=error, delivered=False))
        return not isinstance(error, Unresolvable)
    headers = {
        "Host": target.host,
        "Content-Type": "application/json",
        "User-Agent": "squeeze-webhook/1",
        "X-Squeeze-Timestamp": timestamp,
        "X-Squeeze-Event": "job.finished",
        "X-Squeeze-Signature": sign(secret, timestamp, body),
    }
    # connect to the addresses just checked, in order: a host that resolves elsewhere a second time (DNS
    # rebinding) cannot redirect the delivery; SNI and the certificate still use the host's name
    extensions = {"sni_hostname": target.hostname} if url.startswith("https") else {}
    with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False) as client:
        for address_url in target.urls:
            try:
                response = client.post(address_url, content=body, headers=headers, extensions=extensions)
            except httpx.TransportError as e:  # this address does not answer: the next one may
                error = f"{type(e).__name__}: {e}"[:500]
                continue
            except httpx.HTTPError as e:
                error = f"{type(e).__name__}: {e}"[:500]
                break
            status, error = response.status_code, None
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:200]}"
            break
    with session_scope() as session:
        session.add(
            WebhookDelivery(
                job_id=job_id, attempt=attempt, url=url, status_code=status, error=error, delivered=error is None
            )
        )
    return error is None


def backoff_s(attempt: int) -> int:
    return 2**attempt
