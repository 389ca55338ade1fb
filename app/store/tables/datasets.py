from __future__ import annotations

from ..db import Base
from .uploads import UploadColumns


class Dataset(UploadColumns, Base):
    __tablename__ = "datasets"
