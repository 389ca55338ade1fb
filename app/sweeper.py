"""Finds running jobs whose worker stopped heart-beating and puts them back in the queue (or fails
them after too many attempts), so no job stays `running` forever. Runs in every API process; the
state changes are conditional updates, so several sweepers never double a job."""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool

from .config import get_settings
from .db import session_factory
from .jobs.state import requeue_or_fail_stale, stale_cutoff
from .jobs.tables import QUEUED, Job
from .queue import enqueue_job

log = logging.getLogger("squeeze.sweeper")


def sweep_once() -> list[tuple[str, str]]:
    settings = get_settings()
    with session_factory()() as session:
        changed = requeue_or_fail_stale(session, stale_cutoff(settings.heartbeat_timeout_s), settings.job_max_attempts)
        for job_id, status in changed:
            log.warning("job's worker stopped responding: job is now %s", status, extra={"job_id": job_id})
            if status == QUEUED:
                enqueue_job(job_id, session.get(Job, job_id).queue)
    return changed


async def sweep_forever() -> None:
    interval = get_settings().sweep_interval_s
    while True:
        await asyncio.sleep(interval)
        try:
            await run_in_threadpool(sweep_once)
        except Exception:  # a database or broker hiccup: try again next round
            log.exception("sweep failed")
