from __future__ import annotations

from datetime import datetime
from typing import Any

from ..schemas import ErrorBody, RowOut


class UploadOut(RowOut):
    id: str
    name: str
    status: str  # pending | ready | invalid
    format: str
    sha256: str
    size_bytes: int
    info: dict[str, Any] | None
    error: ErrorBody | None = None
    created_at: datetime
    updated_at: datetime
