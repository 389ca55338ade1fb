from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    code: str
    message: str

    @classmethod
    def of(cls, row) -> ErrorBody | None:
        return cls(code=row.error_code, message=row.error_message or "") if row.error_code else None


class UploadOut(BaseModel):
    id: str
    name: str
    status: str  # pending | ready | invalid
    format: str
    sha256: str
    size_bytes: int
    info: dict[str, Any] | None
    error: ErrorBody | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def fields_of(cls, row) -> dict[str, Any]:
        return dict(
            id=row.id,
            name=row.name,
            status=row.status,
            format=row.format,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            info=row.info,
            error=ErrorBody.of(row),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
