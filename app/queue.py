"""Sending work to the workers: task names and ids only (the API never imports the worker code)."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.store.broker import CPU_QUEUE, GPU_QUEUE, INSPECT_QUEUE, INSPECT_TASK, RUN_JOB_TASK, get_celery
from app.store.config import get_settings
from app.store.job_state import runnable_now
from workers.compression.contract.vocabulary import ApiErrorCode, Device
from workers.compression.contract.vocabulary import Queue as QueueName

from .errors import ApiError
from .uploads.service import mark_unqueued

log = logging.getLogger("squeeze.queue")


def queue_for(device: Device) -> QueueName:
    # `auto` runs wherever a worker is free: every worker consumes `cpu`, and a GPU worker uses its GPU
    return GPU_QUEUE if device == Device.CUDA else CPU_QUEUE


def enqueue_inspection(session: Session, row, kind: str) -> None:
    try:
        get_celery().send_task(INSPECT_TASK, args=[kind, row.id], queue=INSPECT_QUEUE)
    except Exception as e:  # broker down: say so now rather than leave the upload pending forever
        raise mark_unqueued(session, row, e) from None


def enqueue_job(job_id: str, queue: str) -> None:
    try:
        get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    except Exception as e:
        raise ApiError(503, ApiErrorCode.QUEUE_UNAVAILABLE, f"the job queue is unreachable; try again shortly ({e})") from None


def queue_depths() -> dict[str, int | None]:
    depths: dict[str, int | None] = {}
    try:
        with get_celery().connection_for_write() as conn, conn.channel() as channel:
            for q in (INSPECT_QUEUE, CPU_QUEUE, GPU_QUEUE):
                # declaring is idempotent, and a passive declare fails on Redis for a queue never consumed
                depths[q] = channel.queue_declare(queue=q, durable=True, auto_delete=False).message_count
    except Exception as e:  # a broker that is down must not break the scrape
        log.warning("queue depth unavailable: %s", e)
        depths = {INSPECT_QUEUE: None, CPU_QUEUE: None, GPU_QUEUE: None}
    return depths


def top_up_tokens(session: Session) -> int:
    """Every job that could start now must have a message in its queue (a token a worker spends on the
    fairest job: app/store/job_state.dispatch_order); jobs of tenants at their running limit get theirs
    when one of that tenant's jobs ends. A broker restarted without its data (Redis keeps nothing on disk
    here) or a lost send leaves fewer messages than that: the shortfall is sent again, for the oldest
    jobs. A worker between taking a message and claiming a job may make the count one short; the extra
    message then finds nothing to do. Each API process's sweeper does this, so a shortfall may be sent once
    per process: extra messages cost a query each and do not accumulate (they count as depth next time).
    Returns how many were sent."""
    settings = get_settings()
    sent = 0
    for queue, depth in queue_depths().items():
        if depth is None or queue == INSPECT_QUEUE:
            continue  # unknown (broker down: next sweep); inspections are re-sent by time (sweeper)
        runnable = runnable_now(session, queue, settings.max_running_jobs_per_tenant, settings.job_max_attempts)
        for job_id in runnable[: max(0, len(runnable) - depth)]:
            enqueue_job(job_id, queue)
            sent += 1
    return sent
