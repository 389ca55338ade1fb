"""Sending work to the workers: task names and ids only (the API never imports the worker code)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.store.broker import CPU_QUEUE, GPU_QUEUE, INSPECT_QUEUE, INSPECT_TASK, RUN_JOB_TASK, get_celery

from .errors import ApiError
from .uploads.service import mark_unqueued


def queue_for(device: str) -> str:
    # `auto` runs wherever a worker is free: every worker consumes `cpu`, and a GPU worker uses its GPU
    return GPU_QUEUE if device == "cuda" else CPU_QUEUE


def enqueue_inspection(session: Session, row, kind: str) -> None:
    try:
        get_celery().send_task(INSPECT_TASK, args=[kind, row.id], queue=INSPECT_QUEUE)
    except Exception as e:  # broker down: say so now rather than leave the upload pending forever
        raise mark_unqueued(session, row, e) from None


def enqueue_job(job_id: str, queue: str) -> None:
    try:
        get_celery().send_task(RUN_JOB_TASK, args=[job_id], queue=queue)
    except Exception as e:
        raise ApiError(503, "queue_unavailable", f"the job queue is unreachable; try again shortly ({e})") from None
