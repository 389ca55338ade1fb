"""The measurement result, shaped as DESIGN.md's `Measurement`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LatencyStats(BaseModel):
    p50: float
    p90: float
    p99: float


class Latency(BaseModel):
    b1: LatencyStats | None
    bN: LatencyStats | None
    batch: int


class Measurement(BaseModel):
    size_bytes: int
    params: int
    nonzero_params: int
    macs: int | None
    latency_ms: Latency
    throughput_per_s: float | None
    peak_mem_bytes: int | None
    accuracy: float | None
    agreement: float | None  # vs the baseline; None for the baseline itself
    agreement_metric: str | None  # "top1" for classifier outputs [N, classes], "cosine" otherwise
    cosine_similarity: float | None  # mean per-sample cosine of outputs vs the baseline, for every model
    device: str
    runtime: str
    env: dict = Field(default_factory=dict)


class Ratios(BaseModel):
    """Candidate vs baseline, each the median of per-round ratios measured interleaved."""

    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None


class MeasureSettings(BaseModel):
    batch: int = Field(32, ge=2, le=4096, description="the larger batch size timed besides batch 1")
    threads: int | None = Field(None, ge=1, description="intra-op threads; default: torch's current setting")
    device: Literal["cpu", "cuda"] = "cpu"
    warmup: int = Field(3, ge=1)
    rounds: int = Field(7, ge=3, description="interleaved rounds; ratios are medians over rounds")
    seconds_per_model: float = Field(2.0, gt=0, description="timing budget per model and batch size")
    eval_samples: int = Field(2048, ge=1, description="at most this many samples are scored")
