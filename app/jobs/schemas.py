from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SkipValidation

from workers.compression.contract.recipe import Recipe
from workers.compression.contract.report import Report

from ..artifacts.schemas import ArtifactOut
from ..schemas import ErrorBody, RowOut


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    dataset_id: str | None = Field(None, max_length=40, description="calibration / training data")
    eval_dataset_id: str | None = Field(None, max_length=40, description="measured on; default: dataset_id")
    # documented as the typed Recipe; parsed by the service (jobs/service.py) after the checks that come first
    # (the key, ownership, readiness), so a bad recipe for another tenant's model is still a 404
    recipe: SkipValidation[Recipe] = Field(description='{"steps": [{"method": ..., ...}, ...]}; see GET /v1/methods')
    device: Literal["auto", "cpu", "cuda"] = "auto"
    name: str | None = Field(None, max_length=300)
    callback_url: HttpUrl | None = Field(None, description="receives a signed POST when the job ends")


class PartialResults(BaseModel):
    """What a running or cancelled job holds before (or instead of) a full report: `{}` when a cancelled
    search had nothing stored yet."""

    model_config = ConfigDict(extra="forbid")


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
    # stored rows that an older version wrote still read, as plain JSON, rather than fail the request
    recipe: Recipe | dict[str, Any] = Field(union_mode="left_to_right")
    device_used: str | None
    queue: str
    attempts: int
    worker: str | None
    cancel_requested: bool
    callback_url: str | None
    results: Report | PartialResults | dict[str, Any] | None = Field(
        union_mode="left_to_right",
        description="the report once the job has ended (or a search's front so far, with partial: true)",
    )
    artifacts: list[ArtifactOut] = []
    started_at: datetime | None
    updated_at: datetime
