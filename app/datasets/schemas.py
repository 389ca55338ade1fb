from __future__ import annotations

from ..uploads.schemas import UploadOut


class DatasetOut(UploadOut):
    @classmethod
    def of(cls, row) -> DatasetOut:
        return cls(**cls.fields_of(row))
