"""What a tenant keeps in the shared store: the bytes of its models, datasets, artifacts and job logs (each
row counted at its size, even where identical bytes are stored once for several tenants), against its
storage quota. One query, four sums."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .tables.artifacts import Artifact
from .tables.datasets import Dataset
from .tables.jobs import Job
from .tables.models import Model


@dataclass(frozen=True)
class StorageUsage:
    models: int
    datasets: int
    artifacts: int
    logs: int

    @property
    def total(self) -> int:
        return self.models + self.datasets + self.artifacts + self.logs


def storage_of(session: Session, tenant_id: str) -> StorageUsage:
    def total(column, table):
        return select(func.coalesce(func.sum(column), 0)).where(table.tenant_id == tenant_id).scalar_subquery()

    row = session.execute(
        select(
            total(Model.size_bytes, Model),
            total(Dataset.size_bytes, Dataset),
            total(Artifact.size_bytes, Artifact),
            total(Job.event_bytes, Job),
        )
    ).one()
    return StorageUsage(*(int(v) for v in row))
