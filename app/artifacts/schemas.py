from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import computed_field

from ..schemas import RowOut


class ArtifactOut(RowOut):
    id: str
    job_id: str
    source_model_id: str
    step_index: int
    method: str
    params: dict[str, Any]
    filename: str
    format: str
    sha256: str
    size_bytes: int
    toolchain: dict[str, Any]
    created_at: datetime
    measurement: dict[str, Any] | None = None

    @computed_field
    @property
    def download_url(self) -> str:
        return f"/v1/artifacts/{self.id}/download"
