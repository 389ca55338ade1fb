"""Content-addressed blobs and how many rows (models, datasets, artifacts) use each: the bytes are removed
only by the collector, once nothing refers to them (app/store/blob_refs.py says in which order)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class Blob(Base):
    __tablename__ = "blobs"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    refs: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow, index=True)
