"""One router shape for both uploaded resources (models, datasets): upload, list, read, delete. A resource
is described once (`UploadResource`) and `upload_router` makes its routes, so the two cannot drift."""


from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Select, select

from app.store.blobs import get_blob_store
from app.store.config import get_settings
from workers.compression.contract.vocabulary import ApiErrorCode

from ..dependencies import SessionDep, TenantDep, get_owned, take_slot
from ..errors import ApiError
from ..pagination import Page, PageParams, page_params, paginate
from ..queue import enqueue_inspection
from .schemas import UploadForm, UploadOut
from .service import check_pending_inspections, check_quota, delete_upload, record_upload, request_size, sniff
from .stream import receive_upload


@dataclass(frozen=True)
class UploadResource:
    kind: str  # "model": ids, messages, the inspection's kind
    plural: str  # "models": the route prefix
    table: type
    out: type[UploadOut]
    form: type[UploadForm]
    id_prefix: str
    detect: Callable  # the torch-free format sniffer for its bytes
    # the jobs that refer to a row: a row in use is kept, so those jobs' results stay reproducible
    users: Callable[[object], Select]
    responses: dict  # the answers beside the success one, for the OpenAPI schema


def upload_router(res: UploadResource) -> APIRouter:
    router = APIRouter(prefix=f"/v1/{res.plural}", tags=[res.plural])
    RowId = Annotated[str, Path(alias=f"{res.kind}_id", max_length=40)]

    def owned(session, tenant, row_id: str):
        return get_owned(session, res.table, tenant, row_id, res.kind)

    @router.post(
        "",
        status_code=201,
        response_model=res.out,
        name=f"upload_{res.kind}",
        responses=res.responses["upload"],
        openapi_extra={"requestBody": _multipart_body(res)},
    )
    async def upload(request: Request, session: SessionDep, tenant: TenantDep):
        settings, store = get_settings(), get_blob_store()
        release = take_slot("uploads", settings.max_uploads_in_flight_per_tenant, tenant.id)
        try:
            await run_in_threadpool(check_pending_inspections, session, tenant.id)
            await run_in_threadpool(check_quota, session, tenant.id, request_size(request))
            # no database connection is held while the body streams in: a slow upload must not hold the pool
            await run_in_threadpool(session.close)
            received = await receive_upload(request, store, settings.max_upload_bytes)
        finally:
            release()
        try:
            form = res.form.parse(received.fields)
            fmt = await run_in_threadpool(sniff, received, res.detect)
            if form.format and form.format != fmt:
                raise ApiError(
                    422, ApiErrorCode.FORMAT_MISMATCH, f"the file was declared {form.format} but its bytes are {fmt}"
                )
        except ApiError:
            received.temp.unlink(missing_ok=True)
            raise
        extra = {"load_options": options} if (options := form.load_options()) is not None else {}
        row = await run_in_threadpool(
            record_upload, session, res.table, tenant.id, received, fmt, store, res.id_prefix, form.name, **extra
        )
        await run_in_threadpool(enqueue_inspection, session, row, res.kind)
        return res.out.of(row)

    @router.get("", response_model=Page[res.out], name=f"list_{res.plural}", responses=res.responses["list"])
    def list_rows(session: SessionDep, tenant: TenantDep, params: PageParams = Depends(page_params)):
        query = select(res.table).where(res.table.tenant_id == tenant.id)
        rows, cursor = paginate(session, query, res.table.id, params)
        return Page[res.out](items=[res.out.of(r) for r in rows], next_cursor=cursor)

    @router.get(f"/{{{res.kind}_id}}", response_model=res.out, name=f"read_{res.kind}", responses=res.responses["read"])
    def read(row_id: RowId, session: SessionDep, tenant: TenantDep):
        return res.out.of(owned(session, tenant, row_id))

    @router.delete(
        f"/{{{res.kind}_id}}", status_code=204, name=f"remove_{res.kind}", responses=res.responses["delete"]
    )
    def remove(row_id: RowId, session: SessionDep, tenant: TenantDep) -> None:
        row = owned(session, tenant, row_id)
        if session.scalar(res.users(row).limit(1)):
            raise ApiError(
                409,
                ApiErrorCode.IN_USE,
                f"jobs refer to this {res.kind}; it is kept so their results stay reproducible",
            )
        delete_upload(session, row, get_blob_store())

    return router


def _multipart_body(res: UploadResource) -> dict:
    """The upload is read by a streaming parser (stream.py), not by FastAPI: its body is documented here."""
    fields = {
        name: {"type": "string", "description": field.description or ""}
        for name, field in res.form.model_fields.items()
    }
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                }
            }
        },
    }
