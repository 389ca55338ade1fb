from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, computed_field

from workers.compression.contract.formats import ModelFormat
from workers.compression.contract.measure import Measurement

from ..schemas import RowOut


class ArtifactOut(RowOut):
    id: str
    job_id: str
    source_model_id: str
    step_index: int
    method: str
    params: dict[str, Any]
    filename: str
    format: ModelFormat
    sha256: str
    size_bytes: int
    toolchain: dict[str, Any]
    created_at: datetime
    measurement: Measurement | None = Field(None, description="as the job measured it, beside its baseline")

    @computed_field
    @property
    def download_url(self) -> str:
        return f"/v1/artifacts/{self.id}/download"
