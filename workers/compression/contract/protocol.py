"""The worker's parent/child protocol: what the trusted parent asks the child to do (`Spec`) and what
the child says back (`Event`, one JSON object a line). Both are discriminated unions validated on
arrival, so neither side picks a dict apart by string keys."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .inspection import UploadInfo
from .load import LoadOptions
from .measure import MeasureSettings
from .recipe import Recipe
from .report import Report
from .vocabulary import JobErrorCode


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- parent -> child


class InspectModel(_Message):
    action: Literal["inspect_model"] = "inspect_model"
    path: str
    load: LoadOptions = LoadOptions()


class InspectDataset(_Message):
    action: Literal["inspect_dataset"] = "inspect_dataset"
    path: str


class RunRecipe(_Message):
    action: Literal["run_recipe"] = "run_recipe"
    model_path: str
    recipe: Recipe
    out_dir: str
    data_path: str | None = None
    eval_data_path: str | None = None
    load: LoadOptions = LoadOptions()
    models: dict[str, str] = Field({}, description="files of other models a step names (a student), by id")
    checkpoint_dir: str | None = None
    measure: MeasureSettings = MeasureSettings()


Work = Annotated[Union[InspectModel, InspectDataset, RunRecipe], Field(discriminator="action")]  # noqa: UP007


class Spec(_Message):
    """What the child reads from its spec file: the work, and the limits it applies to itself."""

    work: Work
    memory_limit_mb: int | None = None
    parent_pid: int | None = Field(None, description="exit at once if this is not the parent (unsandboxed)")


# ---------------------------------------------------------------- child -> parent


class ProgressEvent(_Message):
    event: Literal["progress"] = "progress"
    progress: float
    stage: str


class LogEvent(_Message):
    event: Literal["log"] = "log"
    message: str


class CheckpointEvent(_Message):
    """A training step wrote a checkpoint file; the parent copies it to the blob store."""

    event: Literal["checkpoint"] = "checkpoint"
    path: str


class PartialEvent(_Message):
    """What a search has found so far, in the report's shape."""

    event: Literal["partial"] = "partial"
    report: Report


class InspectedEvent(_Message):
    """What an inspection found, validated against the contract's bounds on arrival (contract/inspection.py)."""

    event: Literal["inspected"] = "inspected"
    info: UploadInfo


class CompletedEvent(_Message):
    event: Literal["completed"] = "completed"
    report: Report


class FailedEvent(_Message):
    event: Literal["failed"] = "failed"
    code: JobErrorCode
    message: str = Field(max_length=20_000)
    report: Report | None = Field(None, description="what a failed run still measured and saved")


Event = Annotated[
    Union[ProgressEvent, LogEvent, CheckpointEvent, PartialEvent, InspectedEvent, CompletedEvent, FailedEvent],  # noqa: UP007
    Field(discriminator="event"),
]
EVENT: TypeAdapter = TypeAdapter(Event)


class StopReason(StrEnum):
    """Why the parent killed the child."""

    MEMORY = "memory"
    TIME = "time"
    DISK = "disk"
    CANCEL = "cancel"
    LOST = "lost"  # the job was taken over or ended elsewhere
