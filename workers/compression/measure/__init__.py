"""The measurement protocol (docs/measurement.md): baseline and candidates measured in one process, on the
same inputs, timed interleaved; a speedup is the median of per-round ratios with its 95 % interval, flagged
noisy when the interval is wide or the rounds were taken under contention, and timed again when it is
beyond what the change could physically buy."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..contract.measure import (
    NOISY_WIDTH,
    Latency,
    LatencyStats,
    Measurement,
    MeasureSettings,
    Ratios,
    ReferenceRatios,
    Timing,
)
from ..contract.vocabulary import Device, Runtime
from ..data import Dataset
from ..formats.spec import LoadedModel
from ..hardware import cpu_has_amx, cpu_has_vnni
from .generation import measure_generation, token_ids_and_mask
from .metrics import count_macs, count_params, environment, first_tensor, outputs_over, peak_memory
from .quality import score
from .timing import MIN_CI_ROUNDS, STATISTIC, TimingRun, time_interleaved

NOISY_STEAL = 0.10  # the hypervisor took more than this share of the CPU during the rounds
# int8 against fp32 on one runtime, by what the CPU multiplies int8 with (twice its peak gain, for room):
# AVX2 alone ~2x, VNNI ~4x, AMX tiles ~16x an fp32 FMA loop. The runtime switch (eager -> compiled) is the
# other factor: bounded apart, against the original on the artifact's own runtime when that was measured.
PLAUSIBLE_SAME_RUNTIME = {"amx": 32.0, "vnni": 8.0, "avx2": 4.0}
PLAUSIBLE_ACROSS_RUNTIMES = 30.0  # eager Python overhead against a fused runtime, on a tiny model
TINY_MS = 1.0  # a baseline faster than this at batch 1 is timed there on one thread (see _b1_threads)
PLAUSIBLE_BATCH_GAP = 4.0  # batch 1 speedup this far above batch N's, for the same graph

__all__ = ["Latency", "LatencyStats", "MeasureSettings", "Measurement", "Ratios", "measure_models", "outputs_of"]


def _batch_input(model: LoadedModel, data: Dataset | None, batch: int, device: str) -> torch.Tensor:
    if data is not None:
        x = data.x[:batch]
        if len(x) < batch:  # small datasets are tiled up to the batch size
            x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.ndim - 1)))[:batch]
    else:
        x = model.require_spec().example(batch)
    return x.to(device)


def outputs_of(model: LoadedModel, x: torch.Tensor, batch: int, device: str) -> torch.Tensor:
    """Runs the model over `x` in batches; returns float32 outputs on the CPU."""
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(first_tensor(model.module(x[i : i + batch].to(device))).float().cpu())
    return torch.cat(outs)


def all_outputs_of(model: LoadedModel, x: torch.Tensor, batch: int, device: str) -> list[torch.Tensor]:
    """Every output of the model over `x` (detector heads, landmarks, scores), float32 on the CPU."""
    return outputs_over(model.module, x, batch, device)


def perplexity(logits: torch.Tensor, x: torch.Tensor, names: tuple[str, ...] | None) -> float | None:
    """exp(mean next-token negative log-likelihood) over the real (unmasked) tokens of the evaluation set."""
    ids, mask = token_ids_and_mask(x, names)
    if logits.ndim != 3 or logits.shape[:2] != ids.shape or ids.shape[1] < 2:
        return None
    weights = (mask[:, 1:] * mask[:, :-1]).float()
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view_as(weights)
    return float(torch.exp((nll * weights).sum() / weights.sum().clamp_min(1)))


def _next_token_agreement(logits: torch.Tensor, base: torch.Tensor, x: torch.Tensor, names) -> float:
    _, mask = token_ids_and_mask(x, names)
    same = (logits.argmax(-1) == base.argmax(-1)).float()
    return float((same * mask).sum() / mask.sum().clamp_min(1))


def measure_models(
    models: list[LoadedModel],
    data: Dataset | None = None,
    settings: MeasureSettings | None = None,
    progress: Callable[[float, str], None] | None = None,
    references: Sequence[int | None] | None = None,
) -> tuple[list[Measurement], list[Ratios]]:
    """Measures `models[0]` (the baseline) and every candidate after it.

    Returns one Measurement per model and, per model, its Ratios against the baseline (the baseline's
    own are 1.0). `references[i]`, where given, is the index of a second model model i is compared with
    (the original on the runtime model i uses): its ratios land in `Ratios.reference`."""
    settings = settings or MeasureSettings()
    device = settings.device
    if settings.threads:
        torch.set_num_threads(settings.threads)
    threads = torch.get_num_threads()
    references = list(references or [None] * len(models))
    report = progress or (lambda f, s: None)
    for m in models:
        if m.runtime not in (Runtime.ONNXRUNTIME, Runtime.OPENVINO):
            m.module.to(device)
    inputs = Inputs.of(models, data, settings.batch, device, threads)
    timed = _timed(models, inputs, settings, threads, references, report)
    report(0.8, "scoring outputs")
    scores = _scores(models, data, settings, device)
    generations, generation_speedups = _generation(models, data, settings, device, report)
    timing = timed.record(threads, inputs.threads_b1)
    env = environment(device, threads)
    stats_b1, stats_bn = timed.stats_b1, timed.stats_bn
    measurements = []
    for i, m in enumerate(models):
        params, nonzero = count_params(m.module)
        measurements.append(
            Measurement(
                size_bytes=m.size_bytes,
                params=params,
                nonzero_params=nonzero,
                macs=inputs.macs[i],
                latency_ms=Latency(b1=stats_b1[i], bN=stats_bn[i], batch=settings.batch),
                throughput_per_s=settings.batch / stats_bn[i].p50 * 1000.0 if stats_bn[i] else None,
                peak_mem_bytes=peak_memory(m.module, inputs.bn[i], device),
                **vars(scores[i]),
                generation=generations[i],
                device=device,
                runtime=m.runtime,
                env=env,
                timing=timing,
            )
        )
    for ratios, speedups in zip(timed.ratios[1:], generation_speedups[1:]):
        for key, (speedup, interval) in speedups.items():
            setattr(ratios, f"speedup_{key}", speedup)
            ratios.speedup_ci95[key] = (round(interval[0], 4), round(interval[1], 4))
    report(1.0, "measured")
    return measurements, timed.ratios


def _eval_inputs(models: list[LoadedModel], data: Dataset | None, settings: MeasureSettings) -> torch.Tensor:
    eval_set = data.head(settings.eval_samples) if data is not None else None
    return eval_set.x if eval_set is not None else models[0].require_spec().example(settings.batch, seed=1)


def _generation(models: list[LoadedModel], data: Dataset | None, settings: MeasureSettings, device: str, report):
    """A causal language model's generation speed (measure/generation.py); nothing for other models."""
    if models[0].facts.task != "causal_lm" or not settings.generation:
        return [None] * len(models), [{} for _ in models]
    report(0.9, "timing generation")
    return measure_generation(
        models,
        _eval_inputs(models, data, settings).to(device),
        models[0].require_spec().names,
        prompt_tokens=settings.prompt_tokens,
        new_tokens=settings.new_tokens,
        rounds=settings.rounds,
        progress=lambda s: report(0.9, s),
    )


@dataclass
class Inputs:
    """What every model is timed on: a batch of 1 and of N (the dataset's first samples, tiled when it has
    fewer), which models can run batch N at all, their MACs, and the threads batch 1 is timed on."""

    b1: list[torch.Tensor]
    bn: list[torch.Tensor]
    runnable: list[int]
    macs: list[int | None]
    threads_b1: int

    @classmethod
    def of(cls, models: list[LoadedModel], data: Dataset | None, batch: int, device: str, threads: int) -> Inputs:
        b1 = [_batch_input(m, data, 1, device) for m in models]
        bn = [_batch_input(m, data, batch, device) for m in models]
        runnable = [0] + [i for i in range(1, len(models)) if _runs(models[i], bn[i])]
        if not _runs(models[0], bn[0]):  # e.g. a program exported with a fixed batch of 1
            runnable = []
        macs = [count_macs(m.module, x) for m, x in zip(models, b1)]
        return cls(b1, bn, runnable, macs, _b1_threads(models[0], b1[0], threads, device))


@dataclass
class Timed:
    """The interleaved rounds at both batch sizes, the ratios they give, and whether they were timed twice."""

    b1: TimingRun
    bn: TimingRun | None
    runnable: list[int]
    ratios: list[Ratios]
    remeasured: bool

    @property
    def stats_b1(self) -> list[LatencyStats | None]:
        return self.b1.stats()

    @property
    def stats_bn(self) -> list[LatencyStats | None]:
        stats: list[LatencyStats | None] = [None] * len(self.stats_b1)
        for k, i in enumerate(self.runnable if self.bn else []):
            stats[i] = self.bn.stats()[k]
        return stats

    def record(self, threads: int, threads_b1: int) -> Timing:
        b1, bn = self.b1, self.bn
        return Timing(
            threads=threads,
            threads_b1=threads_b1,
            affinity=sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
            statistic=STATISTIC,
            rounds={"b1": b1.kept, **({"bN": bn.kept} if bn else {})},
            discarded={"b1": b1.discarded, **({"bN": bn.discarded} if bn else {})},
            other_load=_round(b1.other_load()),
            steal=_round(b1.steal()),
            remeasured=self.remeasured,
        )


def _timed(models, inputs: Inputs, settings: MeasureSettings, threads: int, references, report) -> Timed:
    """Times every model interleaved at batch 1 and N; an implausible ratio is timed again with twice the
    rounds before anything is said about it, and flagged if it persists."""

    def time_all(rounds: int, max_rounds: int) -> tuple[TimingRun, TimingRun | None]:
        report(0.0, "timing batch 1")
        with _threads(models, inputs.threads_b1):
            b1 = _time(
                [(lambda m=m, x=x: m.module(x)) for m, x in zip(models, inputs.b1)],
                settings,
                inputs.threads_b1,
                rounds,
                max_rounds,
            )
        bn = None
        if inputs.runnable:
            report(0.4, f"timing batch {settings.batch}")
            calls = [(lambda i=i: models[i].module(inputs.bn[i])) for i in inputs.runnable]
            bn = _time(calls, settings, threads, rounds, max_rounds)
        return b1, bn

    b1, bn = time_all(settings.rounds, settings.max_rounds)
    ratios = _ratios(models, b1, bn, inputs.runnable, references)
    suspects = [i for i, r in enumerate(ratios) if _implausible(models, inputs.macs, references, i, r)]
    if not suspects:
        return Timed(b1, bn, inputs.runnable, ratios, remeasured=False)
    b1, bn = time_all(2 * settings.rounds, 2 * settings.max_rounds)
    ratios = _ratios(models, b1, bn, inputs.runnable, references)
    for i in suspects:
        if why := _implausible(models, inputs.macs, references, i, ratios[i]):
            ratios[i].noisy = True
            ratios[i].noise.append(f"{why}; timed twice and it persisted, so treat it with suspicion")
    return Timed(b1, bn, inputs.runnable, ratios, remeasured=True)


@dataclass
class Scores:
    """One model's quality against the baseline's outputs on the evaluation samples."""

    accuracy: float | None
    agreement: float | None
    agreement_metric: str | None
    cosine_similarity: float | None
    outputs: list | None
    perplexity: float | None


def _scores(models: list[LoadedModel], data: Dataset | None, settings: MeasureSettings, device: str) -> list[Scores]:
    eval_x = _eval_inputs(models, data, settings)
    labels = data.head(settings.eval_samples).y if data is not None else None
    names = models[0].require_spec().names
    causal = models[0].facts.task == "causal_lm"
    baseline_out = None
    scores = []
    for m in models:
        outs = all_outputs_of(m, eval_x, settings.batch, device)
        q = score(outs, baseline_out, eval_x, labels)  # the quality rule (measure/quality.py)
        accuracy, agreement, metric = q.accuracy, q.agreement, q.metric
        ppl = perplexity(outs[0], eval_x, names) if causal else None
        if causal and baseline_out is not None and ppl is not None:  # what a language model is judged by
            agreement, metric = _next_token_agreement(outs[0], baseline_out[0], eval_x, names), "next-token top1"
        if baseline_out is None:
            baseline_out = outs
        scores.append(Scores(accuracy, agreement, metric, q.cosine, q.outputs, ppl))
    return scores


def _b1_threads(baseline: LoadedModel, x: torch.Tensor, threads: int, device: str) -> int:
    """One thread at batch 1 for a tiny model. Measured here (bench/measure.py, digits CNN, eager against
    onnxruntime on a quiet 2-core machine): with 2 threads each round's time jumps between two levels 2.5x
    apart as the pools' sleeping threads wake late, and the 95 % interval of the speedup spanned 5.2x-7.8x;
    on one thread it was 8.8x-9.7x. Above a millisecond the pool's wake-up is noise in the work."""
    if device != Device.CPU or threads == 1:
        return threads
    with torch.inference_mode():
        for _ in range(3):
            start = time.perf_counter()
            baseline.module(x)
            if time.perf_counter() - start > 10 * TINY_MS / 1000:  # clearly not tiny: no more calls
                return threads
        times = []
        for _ in range(20):
            start = time.perf_counter()
            baseline.module(x)
            times.append(time.perf_counter() - start)
    return 1 if statistics.median(times) * 1000 < TINY_MS else threads


@contextmanager
def _threads(models: list[LoadedModel], n: int):
    """Every model on `n` intra-op threads for a while: torch's (eager, inductor) and each ORT session's."""
    before = torch.get_num_threads()
    # onnxruntime sessions and compiled OpenVINO models fix their threads when made: set_threads remakes them
    sessions = [(m.module, m.module.threads) for m in models if hasattr(m.module, "set_threads")]
    torch.set_num_threads(n)
    for module, _ in sessions:
        module.set_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        for module, t in sessions:
            module.set_threads(t)


def _runs(model: LoadedModel, x: torch.Tensor) -> bool:
    try:
        with torch.inference_mode():
            model.module(x)
        return True
    except Exception:
        return False


def _time(calls, settings: MeasureSettings, threads: int, rounds: int, max_rounds: int) -> TimingRun:
    return time_interleaved(
        calls,
        device=settings.device,
        warmup=settings.warmup,
        rounds=rounds,
        max_rounds=max(max_rounds, rounds),
        seconds_per_model=settings.seconds_per_model,
        threads=threads,
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _speedups(
    b1: TimingRun, bn: TimingRun | None, runnable: list[int], i: int, ref: int
) -> tuple[float, float | None, dict, dict, list[str]]:
    """Model i against model ref: speedups at both batch sizes, their intervals and rounds, and what
    makes them noisy."""
    s1, ci1 = b1.speedup(i, ref)
    ci, rounds, noise = {"b1": ci1}, {"b1": b1.kept}, []
    sn = None
    if bn and i in runnable and ref in runnable:
        sn, cin = bn.speedup(runnable.index(i), runnable.index(ref))
        ci["bN"], rounds["bN"] = cin, bn.kept
    for key, (lo, hi) in ci.items():
        if lo <= 0 or hi / lo > NOISY_WIDTH:
            noise.append(f"the {key} interval spans a factor of {hi / lo:.1f}")
    for key, run in (("b1", b1), ("bN", bn)):
        if run is None or key not in ci:
            continue
        if run.kept < MIN_CI_ROUNDS:
            noise.append(f"only {run.kept} {key} rounds fit the time budget: the interval is their min..max")
        if run.discarded > run.kept:
            noise.append(f"{run.discarded} of {run.kept + run.discarded} {key} rounds ran under contention")
        if run.contended_throughout:
            noise.append(f"every {key} round ran while other processes used {run.other_load():.1f} CPU cores")
        if (steal := run.steal()) is not None and steal > NOISY_STEAL:
            noise.append(f"the hypervisor took {steal:.0%} of the CPU during the {key} rounds")
    return s1, sn, {k: (round(lo, 4), round(hi, 4)) for k, (lo, hi) in ci.items()}, rounds, noise


def _ratios(models, b1: TimingRun, bn: TimingRun | None, runnable: list[int], references) -> list[Ratios]:
    out = []
    for i, m in enumerate(models):
        s1, sn, ci, rounds, noise = _speedups(b1, bn, runnable, i, 0)
        r = Ratios(
            size_ratio=models[0].size_bytes / m.size_bytes,
            speedup_b1=s1,
            speedup_bN=sn,
            speedup_ci95=ci if i else {},
            rounds=rounds if i else {},
            noisy=bool(noise) and i > 0,
            noise=noise if i else [],
        )
        if (ref := references[i]) is not None:
            rs1, rsn, rci, rrounds, rnoise = _speedups(b1, bn, runnable, i, ref)
            r.reference = ReferenceRatios(
                runtime=models[ref].runtime,
                size_ratio=models[ref].size_bytes / m.size_bytes,
                speedup_b1=rs1,
                speedup_bN=rsn,
                speedup_ci95=rci,
                noisy=bool(rnoise),
            )
        out.append(r)
    return out


def same_runtime_bound() -> float:
    """How much faster a quantized model can plausibly run than fp32 on the same runtime, on this CPU."""
    return PLAUSIBLE_SAME_RUNTIME["amx" if cpu_has_amx() else "vnni" if cpu_has_vnni() else "avx2"]


def _implausible(models, macs, references, i: int, r: Ratios) -> str | None:
    """Why model i's ratio is beyond what the change could buy, or None."""
    if i == 0 or i in set(x for x in references if x is not None):  # the originals on other runtimes
        return None
    ref = references[i]
    same, reference = (True, r.reference) if ref is not None else (models[i].runtime == models[0].runtime, r)
    # on one runtime, batch 1 cannot gain much more than batch N (across runtimes it can: per-call overhead)
    gap_b1, gap_bn = reference.speedup_b1, reference.speedup_bN
    if same and gap_bn and gap_b1 > 2 and gap_b1 > PLAUSIBLE_BATCH_GAP * gap_bn:
        return f"{gap_b1:.1f}x at batch 1 but {gap_bn:.2f}x at the large batch for the same graph is implausible"
    base = macs[ref] if ref is not None else macs[0]
    work = base / macs[i] if base and macs[i] else 1.0
    bound = (same_runtime_bound() if same else PLAUSIBLE_ACROSS_RUNTIMES) * max(1.0, work)
    speed = max(s for s in (reference.speedup_b1, reference.speedup_bN) if s is not None)
    if speed > bound:
        against = f"the original on {reference.runtime}" if ref is not None else "the baseline"
        return f"{speed:.1f}x against {against} is more than {bound:.0f}x, beyond what it could physically buy"
    return None
