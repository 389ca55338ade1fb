from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from ..artifacts.schemas import ArtifactOut
from ..uploads.schemas import ErrorBody


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    dataset_id: str | None = Field(None, max_length=40, description="calibration / training data")
    eval_dataset_id: str | None = Field(None, max_length=40, description="measured on; default: dataset_id")
    recipe: dict[str, Any] = Field(description='{"steps": [{"method": ..., ...}, ...]}; see GET /v1/methods')
    device: Literal["auto", "cpu", "cuda"] = "auto"
    name: str | None = Field(None, max_length=300)
    callback_url: HttpUrl | None = Field(None, description="receives a signed POST when the job ends")


class JobOut(BaseModel):
    id: str
    name: str | None
    status: str
    progress: float
    stage: str | None
    model_id: str
    dataset_id: str | None
    eval_dataset_id: str | None
    recipe: dict[str, Any]
    device: str
    device_used: str | None
    queue: str
    attempts: int
    worker: str | None
    cancel_requested: bool
    callback_url: str | None
    error: ErrorBody | None
    results: dict[str, Any] | None
    artifacts: list[ArtifactOut]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job, artifacts: list = ()) -> JobOut:
        error = ErrorBody(code=job.error_code, message=job.error_message or "") if job.error_code else None
        return cls(
            id=job.id, name=job.name, status=job.status, progress=job.progress, stage=job.stage,
            model_id=job.model_id, dataset_id=job.dataset_id, eval_dataset_id=job.eval_dataset_id,
            recipe=job.recipe, device=job.device, device_used=job.device_used, queue=job.queue,
            attempts=job.attempts, worker=job.worker, cancel_requested=job.cancel_requested,
            callback_url=job.callback_url, error=error, results=job.results,
            artifacts=[ArtifactOut.of(a) for a in artifacts], created_at=job.created_at,
            started_at=job.started_at, finished_at=job.finished_at, updated_at=job.updated_at,
        )


class JobSummary(BaseModel):
    id: str
    name: str | None
    status: str
    progress: float
    stage: str | None
    model_id: str
    device: str
    created_at: datetime
    finished_at: datetime | None
    error: ErrorBody | None

    @classmethod
    def of(cls, job) -> JobSummary:
        error = ErrorBody(code=job.error_code, message=job.error_message or "") if job.error_code else None
        return cls(id=job.id, name=job.name, status=job.status, progress=job.progress, stage=job.stage,
                   model_id=job.model_id, device=job.device, created_at=job.created_at,
                   finished_at=job.finished_at, error=error)
