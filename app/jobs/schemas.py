from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, SkipValidation, ValidationError

from workers.compression.contract.recipe import Recipe
from workers.compression.contract.report import Final, Report

from ..artifacts.schemas import ArtifactOut
from ..schemas import ErrorBody, RowOut
from ..store.tables.jobs import SUCCEEDED


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


class Headline(BaseModel):
    """The final artifact's figures, as a list shows them (the full report is in the job)."""

    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None
    verdict: str

    @classmethod
    def of(cls, results: dict[str, Any] | None) -> Headline | None:
        # stored JSON; a job without a full report (running, failed, an older row) has no headline
        try:
            final = Final.model_validate((results or {})["final"])
        except (KeyError, TypeError, ValidationError):
            return None
        return cls(
            size_ratio=final.size_ratio,
            speedup_b1=final.speedup_b1,
            speedup_bN=final.speedup_bN,
            verdict=final.verdict,
        )


def recipe_summary(recipe: dict[str, Any]) -> str:
    """A recipe in a few words per step ("prune structured 30% → quantize int8_dynamic"); a stored recipe
    an older version wrote, which no longer parses, shows its methods."""
    try:
        return Recipe.model_validate(recipe).summary()
    except (ValidationError, TypeError):
        steps = recipe.get("steps") if isinstance(recipe, dict) else None
        return " → ".join(str(s.get("method", "?")) for s in steps if isinstance(s, dict)) if steps else ""


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
    updated_at: datetime
