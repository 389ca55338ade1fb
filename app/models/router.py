from __future__ import annotations

from sqlalchemy import select

from app.store.tables.jobs import Job
from app.store.tables.models import Model
from workers.compression.contract.sniff import detect_format

from ..openapi import UPLOAD_RESPONSES
from ..uploads.router import UploadResource, upload_router
from .schemas import ModelForm, ModelOut

MODELS = UploadResource(
    kind="model",
    plural="models",
    table=Model,
    out=ModelOut,
    form=ModelForm,
    id_prefix="mdl",
    detect=detect_format,
    users=lambda row: select(Job.id).where(Job.model_id == row.id),
    responses=UPLOAD_RESPONSES,
)
router = upload_router(MODELS)
