from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from ..artifacts.schemas import ArtifactOut
from ..schemas import ErrorBody, RowOut


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    dataset_id: str | None = Field(None, max_length=40, description="calibration / training data")
    eval_dataset_id: str | None = Field(None, max_length=40, description="measured on; default: dataset_id")
    recipe: dict[str, Any] = Field(description='{"steps": [{"method": ..., ...}, ...]}; see GET /v1/methods')
    device: Literal["auto", "cpu", "cuda"] = "auto"
    name: str | None = Field(None, max_length=300)
    callback_url: HttpUrl | None = Field(None, description="receives a signed POST when the job ends")


class JobSummary(RowOut):
    """What a job list shows."""

    id: str
    name: str | None
    status: str
    progress: float
    stage: str | None
    model_id: str
    device: str
    error: ErrorBody | None = None
    created_at: datetime
    finished_at: datetime | None


class JobOut(JobSummary):
    """One job in full: recipe, placement, results and artifacts."""

    dataset_id: str | None
    eval_dataset_id: str | None
    recipe: dict[str, Any]
    device_used: str | None
    queue: str
    attempts: int
    worker: str | None
    cancel_requested: bool
    callback_url: str | None
    results: dict[str, Any] | None
    artifacts: list[ArtifactOut] = []
    started_at: datetime | None
    updated_at: datetime
