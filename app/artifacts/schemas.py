from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, computed_field

from workers.compression.contract.formats import ModelFormat, how_to_run
from workers.compression.contract.measure import Measurement
from workers.compression.contract.vocabulary import Runtime

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
    runtime: Runtime | None = Field(None, description="what the job measured it on (what it is meant to run on)")
    measurement: Measurement | None = Field(None, description="as the job measured it, beside its baseline")

    @computed_field
    @property
    def download_url(self) -> str:
        return f"/v1/artifacts/{self.id}/download"

    @computed_field(description="a few lines of Python that run it as the job measured it (x: a batch of inputs)")
    @property
    def how_to_run(self) -> str:
        return how_to_run(self.format, self.runtime, self.filename)
