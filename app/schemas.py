"""What every response schema shares: built from a table row by column name, plus the error body."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict


class ErrorBody(BaseModel):
    code: str
    message: str

    @classmethod
    def of(cls, row) -> ErrorBody | None:
        return cls(code=row.error_code, message=row.error_message or "") if row.error_code else None


class RowOut(BaseModel):
    """A response read from a row's attributes of the same names; `extra` fills what the row does not
    hold (related rows, computed values). Rows with `error_code` get their `error` body here."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, row, **extra: Any) -> Self:
        if "error" in cls.model_fields and "error" not in extra:
            extra["error"] = ErrorBody.of(row)
        return cls.model_validate(row).model_copy(update=extra)
