"""What a tenant holds and may still use: its storage against its quota, its jobs against their limits."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from app.store.config import get_settings
from app.store.tables.datasets import Dataset
from app.store.tables.jobs import QUEUED, RUNNING, Job
from app.store.tables.models import Model
from app.store.tables.uploads import PENDING
from app.store.usage import storage_of

from ..dependencies import SessionDep, TenantDep
from ..openapi import errors

router = APIRouter(prefix="/v1/usage", tags=["usage"])


class Storage(BaseModel):
    models: int = Field(description="bytes of your uploaded models")
    datasets: int
    artifacts: int = Field(description="bytes of your jobs' artifacts")
    logs: int = Field(description="bytes of your jobs' event streams")
    total: int
    quota: int = Field(description="what you may keep; past it uploads answer 413 and new jobs 429 (quota_exceeded)")


class Counted(BaseModel):
    now: int
    limit: int


class Usage(BaseModel):
    storage: Storage
    jobs_active: Counted = Field(description="queued and running jobs")
    jobs_running: Counted
    uploads_pending: Counted = Field(description="uploads waiting for their inspection")


@router.get("", response_model=Usage, responses=errors())
def read_usage(session: SessionDep, tenant: TenantDep) -> Usage:
    settings = get_settings()
    used = storage_of(session, tenant.id)
    statuses = dict(
        session.execute(
            select(Job.status, func.count()).where(Job.tenant_id == tenant.id, Job.status.in_((QUEUED, RUNNING)))
            .group_by(Job.status)
        ).all()
    )
    pending = sum(
        session.scalar(select(func.count()).select_from(t).where(t.tenant_id == tenant.id, t.status == PENDING))
        for t in (Model, Dataset)
    )
    return Usage(
        storage=Storage(
            models=used.models,
            datasets=used.datasets,
            artifacts=used.artifacts,
            logs=used.logs,
            total=used.total,
            quota=settings.storage_quota_bytes_per_tenant,
        ),
        jobs_active=Counted(now=sum(statuses.values()), limit=settings.max_active_jobs_per_tenant),
        jobs_running=Counted(now=statuses.get(RUNNING, 0), limit=settings.max_running_jobs_per_tenant),
        uploads_pending=Counted(now=pending, limit=settings.max_pending_inspections_per_tenant),
    )
