"""Errors the engine raises for bad input, and the codes a failed job reports. Each error carries a
stable `code` and a message a person can act on; the service maps them to HTTP statuses and job error
bodies."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Report


# library messages name the files they read ("Load model from /srv/.../candidate_0.onnx failed"): a tenant
# sees the file's name, never where the worker keeps it
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.+-]+/)+([\w.+-]+)")


def without_paths(message: str) -> str:
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), message)


def short_error(e: Exception) -> str:
    """An exception as one line a user can read: a library's message without its traceback or paths."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return without_paths(f"{type(e).__name__}: {text}" if text else type(e).__name__)[:300]


class JobErrorCode(StrEnum):
    """`error.code` of a failed job, besides the engine errors' own codes below."""

    STEP_FAILED = "step_failed"
    RESOURCE_EXHAUSTED = "resource_exhausted"  # over the job's memory limit
    TIMEOUT = "timeout"  # over the job's time limit
    DISK_EXHAUSTED = "disk_exhausted"  # over the job's disk limit
    WORKER_CRASHED = "worker_crashed"  # the job's process died without a result
    WORKER_LOST = "worker_lost"  # its worker died too often
    NO_GPU = "no_gpu"
    INVALID_OUTPUT = "invalid_output"  # what the job handed back is not what its report says
    INTERNAL = "internal"


class EngineError(Exception):
    code = "engine_error"

    def __init__(self, message: str, *, code: str | None = None, report: Report | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # what a failed run still measured and saved (a step's best candidate): the service stores it
        self.report = report

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message}


class UnsupportedFormatError(EngineError):
    """The bytes are not a model format the engine accepts (pickles included)."""

    code = "unsupported_format"


class InvalidModelError(EngineError):
    """The format is accepted but this file cannot be loaded or run."""

    code = "invalid_model"


class InvalidDatasetError(EngineError):
    code = "invalid_dataset"


class RecipeError(EngineError):
    """The recipe is malformed, or a step does not accept the model's format."""

    code = "invalid_recipe"


class StepFailedError(EngineError):
    """A step started and could not finish."""

    code = "step_failed"
