"""Every table, imported once so SQLAlchemy's metadata (and Alembic) sees the whole schema."""

from ..db import Base
from .artifacts import Artifact, Measurement
from .auth import ApiKey, Tenant
from .blobs import Blob
from .datasets import Dataset
from .jobs import Job, JobEvent, WebhookDelivery
from .models import Model
from .workers import WorkerSeen

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Blob",
    "Dataset",
    "Job",
    "JobEvent",
    "Measurement",
    "Model",
    "Tenant",
    "WebhookDelivery",
    "WorkerSeen",
]
