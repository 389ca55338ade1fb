from __future__ import annotations

from ..db import Base
from ..uploads.tables import UploadColumns


class Dataset(UploadColumns, Base):
    __tablename__ = "datasets"
