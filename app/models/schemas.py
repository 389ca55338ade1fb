from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from ..errors import ApiError, describe_validation
from ..json_body import loads
from ..uploads.schemas import UploadOut


class ModelOut(UploadOut):
    load_options: dict[str, Any]


class ModelForm(BaseModel):
    """The optional form fields that travel with the file."""

    name: str | None = Field(None, max_length=300)
    format: str | None = None
    input_shape: list[int] | None = None
    arch: str | None = Field(None, max_length=200, description="safetensors weights: torchvision name or timm:NAME")
    arch_kwargs: dict[str, Any] | None = None

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not 1 <= len(v) <= 6 or any(d < 1 for d in v)):
            raise ValueError("input_shape is 1 to 6 positive integers, batch first, like [1, 3, 32, 32]")
        return v

    @classmethod
    def parse(cls, fields: dict[str, str]) -> ModelForm:
        raw: dict[str, Any] = {k: v for k, v in fields.items() if k in cls.model_fields and v != ""}
        for key in ("input_shape", "arch_kwargs"):  # JSON-valued form fields
            if key in raw:
                raw[key] = loads(raw[key], key, invalid=(422, "invalid_request"))
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ApiError(422, "invalid_request", describe_validation(e.errors())) from None

    def load_options(self) -> dict[str, Any]:
        return self.model_dump(include={"input_shape", "arch", "arch_kwargs"}, exclude_none=True)
