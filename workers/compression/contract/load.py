"""How to read an uploaded model where its bytes do not say everything (set at upload, kept with it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from .formats import ModelFormat


class LoadOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: ModelFormat | None = None
    input_shape: list[int] | None = None
    arch: str | None = None
    arch_kwargs: dict | None = None
