"""Errors the engine raises for bad input, and the codes a failed job reports. Each error carries a
stable `code` and a message a person can act on; the service maps them to HTTP statuses and job error
bodies."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .vocabulary import JobErrorCode

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


class EngineError(Exception):
    code: JobErrorCode = JobErrorCode.ENGINE_ERROR

    def __init__(self, message: str, *, code: JobErrorCode | None = None, report: Report | None = None):
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

    code = JobErrorCode.UNSUPPORTED_FORMAT


class InvalidModelError(EngineError):
    """The format is accepted but this file cannot be loaded or run."""

    code = JobErrorCode.INVALID_MODEL


class InvalidDatasetError(EngineError):
    code = JobErrorCode.INVALID_DATASET


class RecipeError(EngineError):
    """The recipe is malformed, or a step does not accept the model's format."""

    code = JobErrorCode.INVALID_RECIPE


class StepFailedError(EngineError):
    """A step started and could not finish."""

    code = JobErrorCode.STEP_FAILED
