"""Finds running jobs whose worker stopped heart-beating and puts them back in the queue (or fails
them after too many attempts), so no job stays `running` forever; uploads left pending by a lost
inspection are inspected again; partial uploads of a killed API process are removed; blobs nothing refers
to are collected. Runs in every API process; the
state changes are conditional updates, so several sweepers never double a job."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from app.store import blob_refs
from app.store.blobs import get_blob_store
from app.store.config import get_settings
from app.store.db import session_factory, utcnow
from app.store.job_state import queued_of_tenant, requeue_or_fail_stale, stale_cutoff
from app.store.tables.datasets import Dataset
from app.store.tables.jobs import QUEUED, Job
from app.store.tables.models import Model
from app.store.tables.uploads import PENDING
from app.store.upload_state import UPLOAD_TABLES, lost_inspections

from .queue import enqueue_inspection, enqueue_job, top_up_tokens

log = logging.getLogger("squeeze.sweeper")


def requeue_stuck_uploads(session) -> list[str]:
    """Uploads still pending long after an inspection could have finished lost their worker: inspect again
    (inspection is idempotent: the first result to land wins)."""
    cutoff = utcnow() - timedelta(seconds=get_settings().inspect_time_limit_s + 60)
    again = []
    for table, kind in ((Model, "model"), (Dataset, "dataset")):
        for row in session.scalars(select(table).where(table.status == PENDING, table.updated_at < cutoff)):
            row.updated_at = utcnow()
            session.commit()
            enqueue_inspection(session, row, kind)
            again.append(row.id)
    return again


def requeue_lost_inspections(session) -> list[str]:
    """Uploads whose inspecting worker stopped beating (killed mid-inspection): inspect again now."""
    again = []
    for kind, upload_id in lost_inspections(session, stale_cutoff(get_settings().heartbeat_timeout_s)):
        row = session.get(UPLOAD_TABLES[kind], upload_id)
        if row is not None:
            enqueue_inspection(session, row, kind)
            again.append(upload_id)
    return again


def remove_stale_uploads() -> None:
    removed = get_blob_store().remove_stale_temps(get_settings().stale_upload_s)
    if removed:
        log.warning("removed %d partial uploads nothing wrote to for %d s", len(removed), get_settings().stale_upload_s)


def collect_blobs(session) -> None:
    """Blobs nothing refers to any more (a failed upload's, a cascade's) are removed; counts a crash left
    wrong are recounted first."""
    if fixed := blob_refs.reconcile(session):
        log.warning("recounted the references of %d blobs", fixed)
    if removed := blob_refs.collect(session, get_blob_store()):
        log.info("removed %d blobs nothing refers to", len(removed))


def sweep_once() -> list[tuple[str, str]]:
    settings = get_settings()
    remove_stale_uploads()
    with session_factory()() as session:
        collect_blobs(session)
        for upload_id in requeue_lost_inspections(session):
            log.warning("upload %s lost the worker inspecting it: inspecting it again", upload_id)
        for upload_id in requeue_stuck_uploads(session):
            log.warning("upload %s was still pending: inspecting it again", upload_id)
        changed = requeue_or_fail_stale(session, stale_cutoff(settings.heartbeat_timeout_s), settings.job_max_attempts)
        for job_id, status in changed:
            log.warning("job's worker stopped responding: job is now %s", status, extra={"job_id": job_id})
            job = session.get(Job, job_id)
            if status == QUEUED:
                enqueue_job(job_id, job.queue)
            elif waiting := queued_of_tenant(session, job.tenant_id, job.queue):
                enqueue_job(waiting, job.queue)  # its tenant's running limit has a free place again
        if sent := top_up_tokens(session):
            log.warning("%d queued jobs had no message in the broker (restarted without its data?): sent again", sent)
    return changed


async def sweep_forever() -> None:
    interval = get_settings().sweep_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(sweep_once)
        except Exception:  # a database or broker hiccup: try again next round
            log.exception("sweep failed")
