from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class Artifact(Base):
    """A compressed model a job produced, with its lineage."""

    __tablename__ = "artifacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    source_model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    step_index: Mapped[int] = mapped_column(Integer)  # 1-based position in the recipe
    method: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    filename: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(200))
    toolchain: Mapped[dict[str, Any]] = mapped_column(JSON)  # library versions that produced it
    runtime: Mapped[str | None] = mapped_column(String(32), nullable=True)  # what the job measured it on
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Measurement(Base):
    """One measured model of a job (the baseline or a step's artifact); the full record is `data`,
    the columns are what one filters and sorts by."""

    __tablename__ = "measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    artifact_id: Mapped[str | None] = mapped_column(ForeignKey("artifacts.id", ondelete="CASCADE"), nullable=True)
    role: Mapped[str] = mapped_column(String(16))  # baseline | step | candidate (a search's)
    step_index: Mapped[int] = mapped_column(Integer)  # 0 for the baseline
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    latency_b1_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # p50
    latency_bn_ms: Mapped[float | None] = mapped_column(Float, nullable=True)  # p50
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)
    device: Mapped[str] = mapped_column(String(8))
    runtime: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
