from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select

from app.store.blobs import get_blob_store
from app.store.tables.jobs import Job
from workers.compression.contract.vocabulary import ApiErrorCode, JobStatus

from ..dependencies import SessionDep, TenantDep, get_owned, take_slot
from ..errors import ApiError, describe_validation
from ..json_body import read_json
from ..openapi import errors
from ..pagination import Page, PageParams, page_params, paginate
from ..store.config import get_settings
from . import service
from .events import event_stream
from .reads import answers, job_out
from .schemas import JobIn, JobOut, JobSummary

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def get_job(session, tenant, job_id: str) -> Job:
    return get_owned(session, Job, tenant, job_id, "job")


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
        raise ApiError(422, ApiErrorCode.INVALID_REQUEST, describe_validation(e.errors())) from None


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses=errors(400, 403, 404, 409, 413),
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


@router.get("", response_model=Page[JobSummary], responses=errors())
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    params: PageParams = Depends(page_params),
    status: JobStatus | None = None,
):
    query = select(Job).where(Job.tenant_id == tenant.id)
    if status:
        query = query.where(Job.status == status)
    rows, cursor = paginate(session, query, Job.id, params)
    return Page[JobSummary](items=[JobSummary.of(j) for j in rows], next_cursor=cursor)


@router.get("/{job_id}", response_model=JobOut, responses=errors(404))
async def read_job(job_id: str, tenant: TenantDep) -> Response:
    """Polled by every client: no session dependency (each sync dependency is a hop to the thread pool);
    the read opens its own connection (app/jobs/reads.py)."""
    return await answers.answer(tenant, job_id)


@router.delete("/{job_id}", status_code=204, responses=errors(403, 404, 409))
def delete_job(job_id: str, session: SessionDep, tenant: TenantDep) -> None:
    """A finished job, its artifacts and its log: what it kept no longer counts in your storage."""
    service.delete(session, get_job(session, tenant, job_id), get_blob_store())


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses={202: {"model": JobOut, "description": "running: its worker is stopping it"}, **errors(403, 404, 409)},
)
def cancel_job(job_id: str, response: Response, session: SessionDep, tenant: TenantDep) -> JobOut:
    job = service.cancel(session, get_job(session, tenant, job_id))
    response.status_code = 200 if job.status == JobStatus.CANCELLED else 202  # 202: the worker is stopping it
    return job_out(session, job)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}, **errors(404)},
)
def job_events(
    job_id: str,
    request: Request,
    session: SessionDep,
    tenant: TenantDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    get_job(session, tenant, job_id)
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    release = take_slot("event streams", get_settings().max_event_streams_per_tenant, tenant.id)
    session.close()  # the stream reads with a short session per poll: none is held while it waits
    return StreamingResponse(
        event_stream(job_id, after, request, on_end=release),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
