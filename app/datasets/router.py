from __future__ import annotations

from sqlalchemy import or_, select

from app.store.tables.datasets import Dataset
from app.store.tables.jobs import Job
from workers.compression.contract.sniff import detect_dataset_format

from ..openapi import UPLOAD_RESPONSES
from ..uploads.router import UploadResource, upload_router
from .schemas import DatasetForm, DatasetOut

DATASETS = UploadResource(
    kind="dataset",
    plural="datasets",
    table=Dataset,
    out=DatasetOut,
    form=DatasetForm,
    id_prefix="dst",
    detect=detect_dataset_format,
    users=lambda row: select(Job.id).where(or_(Job.dataset_id == row.id, Job.eval_dataset_id == row.id)),
    responses=UPLOAD_RESPONSES,
)
router = upload_router(DATASETS)
