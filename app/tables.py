"""Every table, imported once so SQLAlchemy's metadata (and Alembic) sees the whole schema."""

from .artifacts.tables import Artifact, Measurement
from .auth.tables import ApiKey, Tenant
from .datasets.tables import Dataset
from .db import Base
from .jobs.tables import Job, JobEvent, WebhookDelivery
from .models.tables import Model

__all__ = [
    "ApiKey",
    "Artifact",
    "Base",
    "Dataset",
    "Job",
    "JobEvent",
    "Measurement",
    "Model",
    "Tenant",
    "WebhookDelivery",
]
