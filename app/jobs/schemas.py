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


class JobSummary(BaseModel):
    """What a job list shows."""

    id: str
    name: str | None
    status: str
    progress: float
    stage: str | None
    model_id: str
    device: str
    error: ErrorBody | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def fields_of(cls, job) -> dict[str, Any]:
        return dict(
            id=job.id,
            name=job.name,
            status=job.status,
            progress=job.progress,
            stage=job.stage,
            model_id=job.model_id,
            device=job.device,
            error=ErrorBody.of(job),
            created_at=job.created_at,
            finished_at=job.finished_at,
        )

    @classmethod
    def of(cls, job) -> JobSummary:
        return cls(**cls.fields_of(job))


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
    artifacts: list[ArtifactOut]
    started_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job, artifacts: list = ()) -> JobOut:
        return cls(
            **cls.fields_of(job),
            dataset_id=job.dataset_id,
            eval_dataset_id=job.eval_dataset_id,
            recipe=job.recipe,
            device_used=job.device_used,
            queue=job.queue,
            attempts=job.attempts,
            worker=job.worker,
            cancel_requested=job.cancel_requested,
            callback_url=job.callback_url,
            results=job.results,
            artifacts=[ArtifactOut.of(a) for a in artifacts],
            started_at=job.started_at,
            updated_at=job.updated_at,
        )
