from __future__ import annotations

from ..uploads.schemas import UploadOut


class DatasetOut(UploadOut):
    pass
