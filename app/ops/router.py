from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from app.store.blobs import get_blob_store
from app.store.broker import get_celery
from app.store.config import get_settings
from app.store.db import get_engine
from app.store.presence import seen_since
from workers.compression.contract.vocabulary import ApiErrorCode

from ..dependencies import auth_failure
from ..errors import ApiError
from ..openapi import json_errors
from ..schemas import opaque
from .metrics import registry

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


def _check(name: str, probe) -> tuple[str, str | None]:
    try:
        probe()
        return name, None
    except Exception as e:
        return name, f"{type(e).__name__}: {e}"[:300]


def _database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker() -> None:
    with get_celery().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _workers() -> list[dict]:
    """Workers seen within the heartbeat timeout, each with the isolation its jobs run under."""
    return [
        {
            "id": opaque(w.name),
            "queues": w.queues.split(","),
            "isolation": w.isolation,
            "seen_at": w.seen_at.isoformat(),
        }
        for w in seen_since(get_settings().heartbeat_timeout_s)
    ]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="each dependency: 'ok' or what is wrong")
    workers: list[dict[str, Any]] = Field(description="workers seen lately, with their queues and isolation")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "a dependency is down, or no worker is alive"}},
)
async def readyz() -> JSONResponse:
    checks = [
        await run_in_threadpool(_check, n, p)
        for n, p in (
            ("database", _database),
            ("broker", _broker),
            ("blob_store", lambda: get_blob_store().check_writable()),
        )
    ]
    workers: list[dict] = []
    if checks[0][1] is None:  # without a live worker nothing submitted would ever run: not ready
        found: list[list[dict]] = []
        name, err = await run_in_threadpool(_check, "workers", lambda: found.append(_workers()))
        seen = found[0] if found else []
        workers = [w for w in seen if w["isolation"].get("mode") != "unavailable"]
        problems = sorted({w["isolation"].get("problem", "") for w in seen if w not in workers})
        if err is None and not workers:
            err = f"no worker seen in the last {get_settings().heartbeat_timeout_s:.0f} s"
        checks.append((name, err))
        if problems:  # a worker that is up but cannot sandbox says why, here, rather than restart unseen
            checks.append(("sandbox", "; ".join(problems)))
    body = {
        "status": "ok" if all(err is None for _, err in checks) else "unavailable",
        "checks": {n: ("ok" if err is None else err) for n, err in checks},
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


def metrics_caller(request: Request) -> None:
    """/metrics counts every tenant's jobs and the queues: it answers the operator's scraper only, which sends
    `Authorization: Bearer $SQUEEZE_METRICS_TOKEN`; without a token configured it is off."""
    token = get_settings().metrics_token
    if not token:
        raise ApiError(404, ApiErrorCode.NOT_FOUND, "metrics are off: set SQUEEZE_METRICS_TOKEN and scrape with it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        if wait := auth_failure(request):
            raise ApiError(
                429, ApiErrorCode.RATE_LIMITED, f"too many wrong tokens; retry in {wait} s", {"Retry-After": str(wait)}
            )
        raise ApiError(
            401,
            ApiErrorCode.UNAUTHORIZED,
            "send the metrics token as 'Authorization: Bearer <token>'",
            {"WWW-Authenticate": "Bearer"},
        )


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Depends(metrics_caller)],
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **json_errors(401, 404, 429),
    },
)
async def metrics() -> Response:
    return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)
