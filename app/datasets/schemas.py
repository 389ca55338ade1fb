from __future__ import annotations

from typing import Literal

from pydantic import Field

from workers.compression.contract.inspection import DatasetInfo

from ..uploads.schemas import UploadForm, UploadOut

DatasetFormat = Literal["npz", "safetensors", "image_zip", "jsonl", "csv"]


class DatasetOut(UploadOut):
    format: DatasetFormat
    info: DatasetInfo | None = Field(description="what the inspection found (once ready)")


class DatasetForm(UploadForm):
    pass
