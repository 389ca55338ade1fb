"""Interleaved latency timing.

On a shared machine throughput drifts by 10x for tens of seconds, so a baseline timed now and a
candidate timed later cannot be compared. Models are timed in rounds (A, B, C, then B, C, A, ...)
and a candidate's speedup is the median, over rounds, of baseline-time / candidate-time within
the same round.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..contract.measure import LatencyStats


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_call(fn: Callable[[], object], device: str) -> float:
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_interleaved(
    calls: Sequence[Callable[[], object]],
    *,
    device: str,
    warmup: int,
    rounds: int,
    seconds_per_model: float,
) -> tuple[list[LatencyStats], list[float]]:
    """Times every call. Returns latency stats (ms) per call and, per call, the median ratio
    time(calls[0]) / time(call) over rounds (so index 0 is 1.0 and > 1 means faster than calls[0])."""
    with torch.inference_mode():
        first = []
        for fn in calls:
            for _ in range(warmup - 1):
                fn()
            first.append(_time_call(fn, device))
        # a model slower than the budget still gets 3 rounds (the minimum for a median), not `rounds`
        rounds = max(3, min(rounds, int(seconds_per_model / max(first))))
        per_round_s = seconds_per_model / rounds
        iters = [max(1, min(1000, int(per_round_s / max(t, 1e-6)))) for t in first]
        samples: list[list[float]] = [[] for _ in calls]
        round_medians: list[list[float]] = [[] for _ in calls]
        for r in range(rounds):
            order = list(range(len(calls)))
            shift = r % len(order)
            order = order[shift:] + order[:shift]  # rotate so no model always runs first
            for i in order:
                times = [_time_call(calls[i], device) for _ in range(iters[i])]
                samples[i].extend(times)
                round_medians[i].append(statistics.median(times))
    stats = []
    for s in samples:
        ms = np.asarray(s) * 1000.0
        stats.append(
            LatencyStats(
                p50=float(np.percentile(ms, 50)), p90=float(np.percentile(ms, 90)), p99=float(np.percentile(ms, 99))
            )
        )
    base = round_medians[0]
    ratios = [statistics.median(b / c for b, c in zip(base, cand)) for cand in round_medians]
    return stats, ratios
