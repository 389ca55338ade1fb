from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import or_, select

from app.store.blobs import get_blob_store
from app.store.config import get_settings
from app.store.tables.datasets import Dataset
from workers.compression.contract.sniff import detect_dataset_format

from ..dependencies import SessionDep, TenantDep, get_owned
from ..errors import ApiError
from ..pagination import Page, PageParams, page_params, paginate
from ..queue import enqueue_inspection
from ..uploads.service import check_pending_inspections, delete_upload, record_upload, sniff
from ..uploads.stream import receive_upload
from .schemas import DatasetOut

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def get_dataset(session, tenant, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, tenant, dataset_id, "dataset")


@router.post("", status_code=201, response_model=DatasetOut)
async def upload_dataset(request: Request, session: SessionDep, tenant: TenantDep) -> DatasetOut:
    settings, store = get_settings(), get_blob_store()
    await run_in_threadpool(check_pending_inspections, session, tenant.id)
    received = await receive_upload(request, store, settings.max_upload_bytes)
    name = received.fields.get("name") or None
    if name and len(name) > 300:
        received.temp.unlink(missing_ok=True)
        raise ApiError(422, "invalid_request", "name: at most 300 characters")
    fmt = await run_in_threadpool(sniff, received, detect_dataset_format)
    row = await run_in_threadpool(record_upload, session, Dataset, tenant.id, received, fmt, store, "dst", name)
    await run_in_threadpool(enqueue_inspection, session, row, "dataset")
    return DatasetOut.of(row)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(session: SessionDep, tenant: TenantDep, params: PageParams = Depends(page_params)):
    rows, cursor = paginate(session, select(Dataset).where(Dataset.tenant_id == tenant.id), Dataset.id, params)
    return Page[DatasetOut](items=[DatasetOut.of(r) for r in rows], next_cursor=cursor)


@router.get("/{dataset_id}", response_model=DatasetOut)
def read_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> DatasetOut:
    return DatasetOut.of(get_dataset(session, tenant, dataset_id))


@router.delete("/{dataset_id}", status_code=204)
def remove_dataset(dataset_id: str, session: SessionDep, tenant: TenantDep) -> None:
    from app.store.tables.jobs import Job

    row = get_dataset(session, tenant, dataset_id)
    used = select(Job.id).where(or_(Job.dataset_id == row.id, Job.eval_dataset_id == row.id)).limit(1)
    if session.scalar(used):
        raise ApiError(409, "in_use", "jobs refer to this dataset; it is kept so their results stay reproducible")
    delete_upload(session, row, get_blob_store())
