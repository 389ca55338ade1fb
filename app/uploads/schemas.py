"""What models and datasets share in the API: the row as served, and the form fields that travel with a
file. Each resource's `info` is the inspection's typed finding (contract/inspection.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError

from workers.compression.contract.vocabulary import ApiErrorCode, UploadStatus

from ..errors import ApiError, describe_validation
from ..schemas import ErrorBody, RowOut


class UploadOut(RowOut):
    id: str
    name: str
    status: UploadStatus = Field(description="pending until a worker inspected it; then ready (with info) or invalid")
    format: str
    sha256: str
    size_bytes: int
    error: ErrorBody | None = None
    created_at: datetime
    updated_at: datetime


class UploadForm(BaseModel):
    """The optional form fields that travel with the file; a resource adds its own."""

    JSON_FIELDS: ClassVar[tuple[str, ...]] = ()  # fields sent as JSON text in the form

    name: str | None = Field(None, max_length=300)
    format: str | None = Field(None, max_length=32, description="the format the file must be (checked)")

    @classmethod
    def parse(cls, fields: dict[str, str]) -> UploadForm:
        from ..json_body import loads

        raw: dict[str, Any] = {k: v for k, v in fields.items() if k in cls.model_fields and v != ""}
        for key in cls.JSON_FIELDS:
            if key in raw:
                raw[key] = loads(raw[key], key, invalid=(422, ApiErrorCode.INVALID_REQUEST))
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ApiError(422, ApiErrorCode.INVALID_REQUEST, describe_validation(e.errors())) from None

    def load_options(self) -> dict[str, Any] | None:
        """What the worker needs to load the file besides its bytes (models: input shape, architecture)."""
        return None
