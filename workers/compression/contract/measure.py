"""The measurement result (docs/measurement.md): what every baseline and artifact is measured with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from .vocabulary import Runtime


class LatencyStats(BaseModel):
    p50: float
    p90: float
    p99: float


class Latency(BaseModel):
    b1: LatencyStats | None
    bN: LatencyStats | None
    batch: int


class Timing(BaseModel):
    """How latency was timed, so a reader can judge the figures (docs/measurement.md)."""

    threads: int = Field(description="intra-op threads of every model timed at the larger batch")
    threads_b1: int = Field(description="the same at batch 1: 1 for a model faster than 1 ms there")
    affinity: list[int] = Field(description="CPUs the timing process may run on")
    statistic: str = Field(description="the per-round figure ratios are taken of")
    rounds: dict[str, int] = Field(description="rounds kept, per batch size ('b1', 'bN')")
    discarded: dict[str, int] = Field(description="rounds taken under contention and left out, per batch size")
    other_load: float | None = Field(
        None, description="median CPU (in cores) other processes used during the rounds; None where unknown"
    )
    steal: float | None = Field(None, description="median fraction of CPU time the hypervisor took during the rounds")
    remeasured: bool = Field(False, description="an implausible ratio was timed a second time")


class OutputQuality(BaseModel):
    """One output of a model with several (detector heads, landmarks and scores) against the baseline's."""

    index: int
    shape: list[int | None]
    kind: str = Field(
        description="classifier (rows are probabilities or many-class logits), boxes (a YOLOv8-style detection "
        "head) or values"
    )
    metric: str = Field(
        description="top1 agreement for classifier outputs, mAP50 against the original's detections for boxes, "
        "cosine for values"
    )
    agreement: float
    relative_error: float = Field(description="|output - baseline| / |baseline|, over the whole output")


class Generation(BaseModel):
    """A causal language model's generation speed, as its users measure it: greedy generation of `new_tokens`
    after a prompt of `prompt_tokens` real tokens of the evaluation text, timed in interleaved rounds
    (docs/measurement.md). Each figure is the median of the rounds, with a 95 % interval for it in `ci95`."""

    prompt_tokens: int = Field(description="tokens of the prompt (M)")
    new_tokens: int = Field(description="tokens generated after it (N), greedily")
    kv_cache: bool = Field(
        description="decoded from a key/value cache; false: each new token recomputes the whole sequence (an "
        "exported graph without cache inputs), which is what running that file gives"
    )
    rounds: int
    prefill_tokens_per_s: float = Field(description="prompt tokens / the time to the first new token")
    decode_tokens_per_s: float = Field(description="(N - 1) / the time from the first new token to the last")
    ttft_ms: float = Field(description="time to the first new token (the prefill)")
    ci95: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="per figure ('prefill_tokens_per_s', 'decode_tokens_per_s', 'ttft_ms')"
    )


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
    perplexity: float | None = Field(None, description="causal language models: on the evaluation texts")
    generation: Generation | None = Field(
        None, description="causal language models: prefill and decode tokens/s and time to first token"
    )
    outputs: list[OutputQuality] | None = Field(
        None,
        description="models with several outputs or a detector's box head: each one's quality; agreement is then "
        "the worst of them",
    )
    device: str
    runtime: Runtime
    env: dict = Field(default_factory=dict)
    timing: Timing | None = Field(None, description="how the latency was timed; the same for every model of a run")


Interval = tuple[float, float]
# an interval wider than this factor (high / low) cannot tell the direction of a change: the speedup is
# flagged noisy, and the verdict inconclusive (docs/measurement.md)
NOISY_WIDTH = 1.5


class ReferenceRatios(BaseModel):
    """A candidate against the original model run on the candidate's own runtime, fp32: what the compression
    bought apart from the switch of runtime."""

    runtime: Runtime
    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None
    speedup_ci95: dict[str, Interval] = Field(default_factory=dict)
    noisy: bool = False


class Ratios(BaseModel):
    """Candidate vs baseline: each speedup is the median of per-round ratios measured interleaved, with a
    distribution-free 95 % interval for that median (order statistics of the rounds)."""

    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None
    speedup_ci95: dict[str, Interval] = Field(
        default_factory=dict, description="'b1' / 'bN' (and 'decode' / 'prefill' for a language model): [low, high]"
    )
    speedup_decode: float | None = Field(
        None, description="causal language models: decode tokens/s against the baseline's (median of round ratios)"
    )
    speedup_prefill: float | None = Field(None, description="the same for prefill tokens/s")
    rounds: dict[str, int] = Field(default_factory=dict, description="rounds behind each speedup")
    noisy: bool = False
    noise: list[str] = Field(default_factory=list, description="why the speedups are flagged noisy, in words")
    reference: ReferenceRatios | None = None


class MeasureSettings(BaseModel):
    batch: int = Field(32, ge=2, le=4096, description="the larger batch size timed besides batch 1")
    threads: int | None = Field(None, ge=1, description="intra-op threads; default: torch's current setting")
    device: Literal["cpu", "cuda"] = "cpu"
    warmup: int = Field(3, ge=1)
    rounds: int = Field(
        8, ge=3, description="interleaved rounds at least; more are timed while an interval is wide, up to max_rounds"
    )
    max_rounds: int = Field(40, ge=3, description="rounds at most, per batch size")
    runtime_baselines: bool = Field(
        True, description="also time the original fp32 model on each other runtime an artifact uses"
    )
    seconds_per_model: float = Field(
        2.0, gt=0, description="timing budget per model and batch size; extra rounds may take up to 2x this"
    )
    eval_samples: int = Field(2048, ge=1, description="at most this many samples are scored")
    prompt_tokens: int = Field(64, ge=2, le=4096, description="language models: the prompt generation is timed after")
    new_tokens: int = Field(32, ge=2, le=1024, description="language models: tokens generated greedily per round")
    generation: bool = Field(True, description="language models: time generation (auto's screening does not)")
