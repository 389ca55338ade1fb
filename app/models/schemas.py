from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from workers.compression.contract.formats import ModelFormat
from workers.compression.contract.inspection import ModelInfo

from ..uploads.schemas import UploadForm, UploadOut


class ModelOut(UploadOut):
    format: ModelFormat
    info: ModelInfo | None = Field(description="what the inspection found (once ready)")
    load_options: dict[str, Any]


class ModelForm(UploadForm):
    JSON_FIELDS: ClassVar = ("input_shape", "arch_kwargs")

    input_shape: list[int] | None = None
    arch: str | None = Field(None, max_length=200, description="safetensors weights: torchvision name or timm:NAME")
    arch_kwargs: dict[str, Any] | None = None

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not 1 <= len(v) <= 6 or any(d < 1 for d in v)):
            raise ValueError("input_shape is 1 to 6 positive integers, batch first, like [1, 3, 32, 32]")
        return v

    def load_options(self) -> dict[str, Any]:
        return self.model_dump(include={"input_shape", "arch", "arch_kwargs"}, exclude_none=True)
