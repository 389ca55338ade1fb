from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select

from app.store.tables.artifacts import Artifact
from app.store.tables.jobs import STATUSES, Job

from ..artifacts.schemas import ArtifactOut
from ..dependencies import SessionDep, TenantDep, get_owned
from ..errors import ApiError, describe_validation
from ..json_body import read_json
from ..pagination import Page, PageParams, page_params, paginate
from ..store.config import get_settings
from . import service
from .events import event_stream
from .schemas import JobIn, JobOut, JobSummary

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def get_job(session, tenant, job_id: str) -> Job:
    return get_owned(session, Job, tenant, job_id, "job")


def job_out(session, job: Job) -> JobOut:
    artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.step_index))
    return JobOut.of(job, artifacts=[ArtifactOut.of(a) for a in artifacts])


def body_schemas() -> dict[str, dict]:
    """JobIn and every schema it refers to (the recipe's step union), for the OpenAPI components: the body
    is read by `job_body`, not by FastAPI, so FastAPI does not collect them itself."""
    schema = JobIn.model_json_schema(ref_template="#/components/schemas/{model}")
    return {**schema.pop("$defs", {}), "JobIn": schema}


async def job_body(request: Request, tenant: TenantDep) -> JobIn:
    """The body is read as JSON whatever its Content-Type says: `curl -d '{...}'` sends
    application/x-www-form-urlencoded, and refusing that would only confuse. It depends on the tenant so
    the key is checked before a byte of the body is read, and the body is bounded (app/json_body.py)."""
    data = await read_json(request, get_settings().max_json_bytes)
    try:
        return JobIn.model_validate(data)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", describe_validation(e.errors())) from None


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobIn"}}},
        }
    },
)
def submit_job(
    body: Annotated[JobIn, Depends(job_body)],
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    job, _created = service.submit(session, tenant, body, idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_out(session, job)


@router.get("", response_model=Page[JobSummary])
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    params: PageParams = Depends(page_params),
    status: Annotated[str | None, Query(pattern="^(" + "|".join(STATUSES) + ")$")] = None,
):
    query = select(Job).where(Job.tenant_id == tenant.id)
    if status:
        query = query.where(Job.status == status)
    rows, cursor = paginate(session, query, Job.id, params)
    return Page[JobSummary](items=[JobSummary.of(j) for j in rows], next_cursor=cursor)


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobOut:
    return job_out(session, get_job(session, tenant, job_id))


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, response: Response, session: SessionDep, tenant: TenantDep) -> JobOut:
    job = service.cancel(session, get_job(session, tenant, job_id))
    response.status_code = 200 if job.status == "cancelled" else 202  # 202: the worker is stopping it
    return job_out(session, job)


@router.get("/{job_id}/events", response_class=StreamingResponse)
def job_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    get_job(session, tenant, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    return StreamingResponse(
        event_stream(job_id, after, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
