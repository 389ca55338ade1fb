"""The webhook's body (README "Webhooks"): POSTed to a job's `callback_url` when it ends, signed."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from .report import Final
from .vocabulary import ApiErrorCode, JobErrorCode, JobStatus


class ErrorInfo(BaseModel):
    code: JobErrorCode | ApiErrorCode
    message: str


class FinishedJob(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    error: ErrorInfo | None
    final: Final | None = Field(description="the final artifact's figures (a succeeded job)")
    finished_at: datetime | None
    url: str = Field(description="the job in the API, relative to its base URL")


class JobFinished(BaseModel):
    event: Literal["job.finished"] = "job.finished"
    job: FinishedJob
