from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SkipValidation

from workers.compression.contract.recipe import Recipe
from workers.compression.contract.report import Final, PartialResults, Report
from workers.compression.contract.vocabulary import Device, JobStatus, Verdict
from workers.compression.contract.vocabulary import Queue as QueueName

from ..artifacts.schemas import ArtifactOut
from ..schemas import ErrorBody, RowOut, opaque
from ..store.tables.jobs import SUCCEEDED


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(max_length=40)
    dataset_id: str | None = Field(None, max_length=40, description="calibration / training data")
    eval_dataset_id: str | None = Field(None, max_length=40, description="measured on; default: dataset_id")
    # documented as the typed Recipe; parsed by the service (jobs/service.py) after the checks that come first
    # (the key, ownership, readiness), so a bad recipe for another tenant's model is still a 404
    recipe: SkipValidation[Recipe] = Field(description='{"steps": [{"method": ..., ...}, ...]}; see GET /v1/methods')
    device: Device = Device.AUTO
    name: str | None = Field(None, max_length=300)
    callback_url: HttpUrl | None = Field(None, description="receives a signed POST when the job ends")


class _FinalOnly(BaseModel):
    model_config = ConfigDict(extra="ignore")
    final: Final


class Headline(BaseModel):
    """The final artifact's figures, as a list shows them (the full report is in the job)."""

    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None
    verdict: Verdict

    @classmethod
    def of(cls, results: dict[str, Any] | None) -> Headline | None:
        """From a stored report, reading only its `final` (a list shows many jobs); None without one."""
        if not results or "final" not in results:  # running, cancelled before a report, or failed early
            return None
        final = _FinalOnly.model_validate(results).final
        return cls(
            size_ratio=final.size_ratio,
            speedup_b1=final.speedup_b1,
            speedup_bN=final.speedup_bN,
            verdict=final.verdict,
        )


def recipe_summary(recipe: dict[str, Any]) -> str:
    """A recipe in a few words per step ("prune structured 30% → quantize int8_dynamic"). Stored recipes
    are in the current shape (validated at submission, older rows migrated)."""
    return Recipe.model_validate(recipe).summary()


class JobSummary(RowOut):
    """What a job list shows."""

    id: str
    name: str | None
    status: JobStatus
    progress: float
    stage: str | None
    model_id: str
    device: Device = Field(description="as asked")
    error: ErrorBody | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recipe_summary: str = Field("", description="the steps in a few words each")
    headline: Headline | None = Field(None, description="the final artifact's size ratio, speedups and verdict")

    @classmethod
    def of(cls, row, **extra: Any) -> Self:
        extra.setdefault("recipe_summary", recipe_summary(row.recipe))
        # a failed job or a running search keeps partial results with a `final`: not a result to show
        extra.setdefault("headline", Headline.of(row.results) if row.status == SUCCEEDED else None)
        return super().of(row, **extra)


class JobOut(JobSummary):
    """One job in full: recipe, placement, results and artifacts."""

    dataset_id: str | None
    eval_dataset_id: str | None
    recipe: Recipe
    device_used: Device | None = Field(description="where it ran: cpu or cuda")
    queue: QueueName
    attempts: int
    worker: str | None = Field(description="an opaque label of the worker that ran it (differs between attempts)")
    cancel_requested: bool
    callback_url: str | None
    results: Report | PartialResults | None = Field(
        union_mode="left_to_right",
        description="the report once the job has ended (or a search's front so far, with partial: true)",
    )
    artifacts: list[ArtifactOut] = []
    updated_at: datetime

    @classmethod
    def of(cls, row, **extra: Any) -> Self:
        extra.setdefault("worker", opaque(row.worker))
        return super().of(row, **extra)
