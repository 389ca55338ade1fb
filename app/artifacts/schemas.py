from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ArtifactOut(BaseModel):
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
    download_url: str
    measurement: dict[str, Any] | None = None

    @classmethod
    def of(cls, row, measurement: dict | None = None) -> ArtifactOut:
        return cls(
            id=row.id,
            job_id=row.job_id,
            source_model_id=row.source_model_id,
            step_index=row.step_index,
            method=row.method,
            params=row.params,
            filename=row.filename,
            format=row.format,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            toolchain=row.toolchain,
            created_at=row.created_at,
            download_url=f"/v1/artifacts/{row.id}/download",
            measurement=measurement,
        )
