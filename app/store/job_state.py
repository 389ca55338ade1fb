"""Job state transitions, shared by the API, the workers and the sweeper. The database is the only
source of truth: every transition is a conditional UPDATE, so two workers (a redelivered message, a
retried task) can never both own a job, and a finished job never changes again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, aliased

from workers.compression.contract.report import PartialResults, Report
from workers.compression.contract.vocabulary import EventKind, JobErrorCode, JobStatus

from .db import utcnow
from .locks import lock_tenant
from .tables.jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, JobEvent


def add_event(session: Session, job_id: str, kind: EventKind, data: dict[str, Any]) -> None:
    """One event of the job's stream; its size is added to the job's `event_bytes` (the tenant's storage)."""
    session.add(JobEvent(job_id=job_id, kind=kind, data=data))
    size = len(json.dumps(data))
    session.execute(update(Job).where(Job.id == job_id).values(event_bytes=Job.event_bytes + size))


def status_event(job: Job) -> dict[str, Any]:
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {"status": job.status, "progress": job.progress, "stage": job.stage, "error": error}


def claim(
    session: Session,
    job_id: str,
    worker: str,
    stale_before: datetime,
    max_attempts: int,
    dead_owner: str | None = None,
    max_running_per_tenant: int | None = None,
) -> Job | None:
    """Takes a queued job (or a running one whose worker stopped heart-beating, or whose owner
    `dead_owner` is known to be dead) for this worker. None when the job is finished, cancelled, alive
    elsewhere, or queued while its tenant already runs `max_running_per_tenant` jobs.

    The limit is part of the one conditional UPDATE, and the tenant's row is locked first (store/locks.py),
    so W workers claiming the same tenant's jobs at once start at most the limit, not the limit + W − 1. A
    takeover is not limited: that job was already counted as running."""
    now = utcnow()
    taken_over = (Job.status == RUNNING) & (Job.heartbeat_at < stale_before)
    if dead_owner is not None:
        taken_over = taken_over | ((Job.status == RUNNING) & (Job.worker == dead_owner))
    startable = Job.status == QUEUED
    if max_running_per_tenant is not None:
        tenant = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
        if tenant is None:
            return None
        lock_tenant(session, tenant)
        others = aliased(Job)
        running = (
            select(func.count())
            .select_from(others)
            .where(others.tenant_id == tenant, others.status == RUNNING)
            .scalar_subquery()
        )
        startable = startable & (running < max_running_per_tenant)
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            Job.attempts < max_attempts,
            or_(startable, taken_over),
        )
        .values(
            status=RUNNING,
            worker=worker,
            attempts=Job.attempts + 1,
            heartbeat_at=now,
            started_at=now,
            progress=0.0,
            stage="starting",
            error_code=None,
            error_message=None,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        session.rollback()
        return None
    job = session.get(Job, job_id)
    session.refresh(job)
    add_event(session, job_id, EventKind.STATUS, status_event(job) | {"attempt": job.attempts})
    session.commit()
    return job


def dispatch_order(session: Session, queue: str, max_running_per_tenant: int, max_attempts: int) -> list[str]:
    """The queued jobs of `queue` in the order a free worker should try them: fair between tenants, so that
    one tenant's many jobs cannot starve another's. Tenants with fewer jobs running come first, then the one
    whose last job started longest ago (round robin), then each tenant's oldest job. A tenant already
    running `max_running_per_tenant` jobs waits; its next job is dispatched when one of them ends (`kick`).

    The broker's message for a job is a token for one unit of work, not an order to run that job: the
    worker that takes it runs the job this order puts first (workers/tasks.py). The limit read here only
    orders the candidates; `claim` enforces it under the tenant's lock."""
    running = _running_per_tenant(session)
    saturated = [tenant for tenant, n in running.items() if n >= max_running_per_tenant]
    queued = session.execute(
        select(Job.id, Job.tenant_id, Job.created_at)
        .where(Job.status == QUEUED, Job.queue == queue, Job.cancel_requested.is_(False), Job.attempts < max_attempts)
        .where(Job.tenant_id.not_in(saturated))  # so that a window of capped tenants' jobs cannot hide the others
        .order_by(Job.created_at)
        .limit(1000)
    ).all()
    tenants = {tenant for _, tenant, _ in queued}
    last_start = dict(
        session.execute(
            select(Job.tenant_id, func.max(Job.started_at)).where(Job.tenant_id.in_(tenants)).group_by(Job.tenant_id)
        ).all()
    )
    never = datetime.min.replace(tzinfo=UTC)

    def fairness(row) -> tuple:
        return running.get(row.tenant_id, 0), last_start.get(row.tenant_id) or never, row.created_at

    return [row.id for row in sorted(queued, key=fairness) if running.get(row.tenant_id, 0) < max_running_per_tenant]


def _running_per_tenant(session: Session) -> dict[str, int]:
    return dict(
        session.execute(select(Job.tenant_id, func.count()).where(Job.status == RUNNING).group_by(Job.tenant_id)).all()
    )


def runnable_now(session: Session, queue: str, max_running_per_tenant: int, max_attempts: int) -> list[str]:
    """The queued jobs of `queue` that could start now, oldest first: per tenant, as many as it has free
    places under its running limit. What the broker must hold a message for (the rest get theirs when a
    job of their tenant ends)."""
    running = _running_per_tenant(session)
    places: dict[str, int] = {}
    out = []
    for job_id, tenant in session.execute(
        select(Job.id, Job.tenant_id)
        .where(Job.status == QUEUED, Job.queue == queue, Job.cancel_requested.is_(False), Job.attempts < max_attempts)
        .order_by(Job.created_at)
        .limit(5000)
    ):
        free = places.setdefault(tenant, max(0, max_running_per_tenant - running.get(tenant, 0)))
        if free:
            places[tenant] = free - 1
            out.append(job_id)
    return out


def queued_of_tenant(session: Session, tenant_id: str, queue: str) -> str | None:
    """One queued job of this tenant on `queue`, if any: what a finished job's worker sends a token for."""
    return session.scalar(
        select(Job.id).where(Job.tenant_id == tenant_id, Job.queue == queue, Job.status == QUEUED).limit(1)
    )


def heartbeat(
    session: Session,
    job_id: str,
    worker: str,
    progress: float | None = None,
    stage: str | None = None,
    results: Report | None = None,
) -> bool:
    """Records liveness (and progress, and what a search has found so far); False when this worker no longer
    owns the job."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if results is not None:
        values["results"] = results.model_dump(mode="json")
    if progress is not None:
        values["progress"] = max(0.0, min(1.0, progress))
    if stage is not None:
        values["stage"] = stage[:300]
    result = session.execute(
        update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == RUNNING).values(**values)
    )
    session.commit()
    return result.rowcount == 1


def finish(
    session: Session,
    job_id: str,
    status: JobStatus,
    *,
    worker: str | None = None,
    code: JobErrorCode | None = None,
    message: str | None = None,
    results: Report | PartialResults | None = None,
    stage: str | None = None,
) -> bool:
    """Ends a job once: only a job not yet terminal (and, with `worker`, owned by it) changes."""
    assert status in TERMINAL
    now = utcnow()
    job = session.get(Job, job_id)
    if job is None:
        return False
    cond = [Job.id == job_id, Job.status.not_in(TERMINAL)]
    if worker is not None:
        cond.append(Job.worker == worker)
    duration = (now - job.started_at).total_seconds() if job.started_at else None
    values: dict[str, Any] = dict(
        status=status, finished_at=now, updated_at=now, error_code=code, error_message=message, duration_s=duration
    )
    if status == SUCCEEDED:
        values.update(progress=1.0, stage="done")
    elif stage is not None:
        values["stage"] = stage
    if results is not None:
        values["results"] = results.model_dump(mode="json")
    result = session.execute(update(Job).where(*cond).values(**values))
    if result.rowcount != 1:
        session.rollback()
        return False
    session.refresh(job)
    add_event(session, job_id, EventKind.STATUS, status_event(job))
    session.commit()
    return True


def requeue_or_fail_stale(session: Session, stale_before: datetime, max_attempts: int) -> list[tuple[str, str]]:
    """The sweeper: running jobs whose worker went silent are put back in the queue (or failed, or
    cancelled when that was asked). Returns [(job_id, new status)]; the caller re-sends queued ones."""
    changed = []
    stale = session.scalars(select(Job).where(Job.status == RUNNING, Job.heartbeat_at < stale_before)).all()
    for job in stale:
        if job.cancel_requested:
            ok = finish(session, job.id, CANCELLED, stage="cancelled (its worker had stopped)")
            new = CANCELLED
        elif job.attempts >= max_attempts:
            ok = finish(
                session,
                job.id,
                FAILED,
                code=JobErrorCode.WORKER_LOST,
                message=f"the worker running this job stopped responding {job.attempts} times "
                f"(last: {job.worker}); the job may need more memory or time than a worker has",
            )
            new = FAILED
        else:
            result = session.execute(
                update(Job)
                .where(
                    Job.id == job.id,
                    Job.status == RUNNING,
                    Job.heartbeat_at < stale_before,
                    Job.cancel_requested.is_(False),  # asked meanwhile: the next sweep cancels it instead
                )
                .values(
                    status=QUEUED,
                    stage=f"requeued: worker {job.worker} stopped responding",
                    worker=None,
                    updated_at=utcnow(),
                )
            )
            ok, new = result.rowcount == 1, QUEUED
            if ok:
                session.refresh(job)
                add_event(session, job.id, EventKind.STATUS, status_event(job))
            session.commit()
        if ok:
            changed.append((job.id, new))
    return changed


def stale_cutoff(timeout_s: float) -> datetime:
    return utcnow() - timedelta(seconds=timeout_s)
