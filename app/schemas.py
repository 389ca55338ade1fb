"""What every response schema shares: built from a table row by column name, plus the error body."""

from __future__ import annotations

import hashlib
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from workers.compression.contract.vocabulary import ApiErrorCode, JobErrorCode


class ErrorBody(BaseModel):
    code: ApiErrorCode | JobErrorCode = Field(description="stable, for programs: README 'Routes' lists them")
    message: str = Field(description="for a person: what went wrong and what to change")

    @classmethod
    def of(cls, row) -> ErrorBody | None:
        return cls(code=row.error_code, message=row.error_message or "") if row.error_code else None


def opaque(name: str | None) -> str | None:
    """A worker as an API answer names it: a stable label, not its host name or process id (which say where
    and what the service runs on). Two attempts on different workers read differently."""
    return f"w-{hashlib.sha256(name.encode()).hexdigest()[:10]}" if name else None


class RowOut(BaseModel):
    """A response read from a row's attributes of the same names; `extra` fills what the row does not
    hold (related rows, computed values). Rows with `error_code` get their `error` body here."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, row, **extra: Any) -> Self:
        if "error" in cls.model_fields and "error" not in extra:
            extra["error"] = ErrorBody.of(row)
        return cls.model_validate(row).model_copy(update=extra)


class ErrorResponse(BaseModel):
    """Every error the API answers: `{"error": {"code", "message"}}`."""

    error: ErrorBody
