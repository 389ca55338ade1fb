"""What models and datasets share: an upload stored as a content-addressed blob, inspected by a worker."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from workers.compression.contract.vocabulary import UploadStatus

from ..db import UTCDateTime, utcnow

PENDING, READY, INVALID = UploadStatus


class UploadColumns:
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    format: Mapped[str] = mapped_column(String(32))  # sniffed from the bytes by the API
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(200))
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # what the inspection found
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # set by the worker inspecting it, and beaten while it does: a pending upload whose beat stopped lost its
    # worker (store/upload_state.py), and is inspected again without waiting for the inspection time limit
    inspect_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
