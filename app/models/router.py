from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from app.store.blobs import get_blob_store
from app.store.config import get_settings
from app.store.tables.models import Model
from workers.compression.contract.sniff import detect_format

from ..dependencies import SessionDep, TenantDep, get_owned
from ..errors import ApiError
from ..pagination import Page, PageParams, page_params, paginate
from ..queue import enqueue_inspection
from ..uploads.service import check_pending_inspections, delete_upload, record_upload, sniff
from ..uploads.stream import receive_upload
from .schemas import ModelForm, ModelOut

router = APIRouter(prefix="/v1/models", tags=["models"])


def get_model(session, tenant, model_id: str) -> Model:
    return get_owned(session, Model, tenant, model_id, "model")


@router.post("", status_code=201, response_model=ModelOut)
async def upload_model(request: Request, session: SessionDep, tenant: TenantDep) -> ModelOut:
    settings, store = get_settings(), get_blob_store()
    await run_in_threadpool(check_pending_inspections, session, tenant.id)
    received = await receive_upload(request, store, settings.max_upload_bytes)
    try:
        form = ModelForm.parse(received.fields)
    except ApiError:
        received.temp.unlink(missing_ok=True)
        raise
    fmt = await run_in_threadpool(sniff, received, detect_format)
    if form.format and form.format != fmt:
        received.temp.unlink(missing_ok=True)
        raise ApiError(422, "format_mismatch", f"the file was declared {form.format} but its bytes are {fmt}")
    row = await run_in_threadpool(
        record_upload,
        session,
        Model,
        tenant.id,
        received,
        fmt,
        store,
        "mdl",
        form.name,
        load_options=form.load_options(),
    )
    await run_in_threadpool(enqueue_inspection, session, row, "model")
    return ModelOut.of(row)


@router.get("", response_model=Page[ModelOut])
def list_models(session: SessionDep, tenant: TenantDep, params: PageParams = Depends(page_params)):
    rows, cursor = paginate(session, select(Model).where(Model.tenant_id == tenant.id), Model.id, params)
    return Page[ModelOut](items=[ModelOut.of(r) for r in rows], next_cursor=cursor)


@router.get("/{model_id}", response_model=ModelOut)
def read_model(model_id: str, session: SessionDep, tenant: TenantDep) -> ModelOut:
    return ModelOut.of(get_model(session, tenant, model_id))


@router.delete("/{model_id}", status_code=204)
def remove_model(model_id: str, session: SessionDep, tenant: TenantDep) -> None:
    from app.store.tables.jobs import Job

    row = get_model(session, tenant, model_id)
    if session.scalar(select(Job.id).where(Job.model_id == row.id).limit(1)):
        raise ApiError(409, "in_use", "jobs refer to this model; it is kept so their results stay reproducible")
    delete_upload(session, row, get_blob_store())
