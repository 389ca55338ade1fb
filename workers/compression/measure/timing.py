"""Interleaved latency timing that stays honest on a busy machine.

A baseline timed now and a candidate timed later cannot be compared on a shared machine, so models are
timed in rounds (A, B, C, then B, C, A, ...) and a speedup is the median, over rounds, of the ratio of the
two models' times within the same round. Three things keep contention from turning into a figure
(bench/measure.py shows what each buys):

- each round's figure is the lower quartile of that model's calls in the round: descheduling only ever
  adds time, so the low end of a round is the model's own cost, where a mean or median picks up stalls;
- the CPU other processes used is read from /proc/stat around every round; a round taken while they
  used more than the cores this process leaves free is discarded (and counted) unless nearly all are;
- rounds continue past the minimum while any interval is wider than TARGET_WIDTH, up to a time cap,
  and the interval itself (order statistics of the per-round ratios, distribution-free) is reported.

Written by hand: pyperf and timeit run one callable at a time in fresh processes, which is exactly what
cannot be compared under drifting load; nothing we found interleaves in-process callables.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..contract.measure import Interval, LatencyStats
from ..contract.vocabulary import Device

MIN_CI_ROUNDS = 6  # the fewest rounds whose min..max is a 95 % interval for the median (1 - 2/2**6 = 0.97)
TARGET_WIDTH = 1.15  # keep timing while some interval's high/low is above this (+-7 %)
TIME_CAP = 2.0  # extra rounds may take up to this many times the nominal budget
STATISTIC = "lower quartile of the round's calls"


def _sync(device: str) -> None:
    if device == Device.CUDA:
        torch.cuda.synchronize()


def _time_call(fn: Callable[[], object], device: str) -> float:
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class CpuSample:
    wall: float
    own_cpu: float  # seconds of CPU this process used (all threads, user + system)
    busy: float | None  # seconds of CPU the whole machine used, from /proc/stat; None where unreadable
    steal: float | None


def _allowed_cpus() -> set[int] | None:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def cpu_sample() -> CpuSample:
    """Busy and stolen CPU time summed over the CPUs this process may run on (a container's cpuset, not the
    whole host), and this process's own CPU time."""
    busy = steal = None
    allowed = _allowed_cpus()
    try:
        hz = os.sysconf("SC_CLK_TCK")
        busy = steal = 0.0
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    if not name.startswith("cpu"):
                        break
                    continue
                if allowed is not None and int(name[3:]) not in allowed:
                    continue
                user, nice, system, _idle, _iowait, irq, softirq, st = ([int(v) for v in values] + [0] * 8)[:8]
                busy += (user + nice + system + irq + softirq) / hz
                steal += st / hz
    except (OSError, ValueError):
        busy = steal = None
    return CpuSample(time.perf_counter(), time.process_time(), busy, steal)


@dataclass(frozen=True)
class RoundLoad:
    other_cores: float | None  # CPU other processes used during the round, in cores
    steal: float | None  # fraction of the machine's CPU time the hypervisor took

    @staticmethod
    def between(a: CpuSample, b: CpuSample) -> RoundLoad:
        wall = b.wall - a.wall
        # /proc/stat counts in clock ticks (10 ms): a round shorter than 10 ticks a CPU cannot be judged
        cpus = len(_allowed_cpus() or range(os.cpu_count() or 1))
        if a.busy is None or b.busy is None or wall < 0.1:
            return RoundLoad(None, None)
        other = max(0.0, (b.busy - a.busy) - (b.own_cpu - a.own_cpu)) / wall
        steal = (b.steal - a.steal) / wall / cpus
        return RoundLoad(other, steal)


def spare_cores(threads: int) -> float:
    """CPU other processes may use without taking cores from the timing: what `threads` leave free, with
    a quarter of a core for the daemons every machine runs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0.25, cores - threads - 0.5)


def median_interval(values: Sequence[float]) -> tuple[float, Interval]:
    """The median and a distribution-free 95 % interval for it: the k-th smallest and k-th largest values,
    k the largest with P(Binomial(n, 1/2) < k) <= 2.5 %. Below MIN_CI_ROUNDS that does not exist: the
    interval is then min..max (a narrower claim than 95 %; the caller flags the result)."""
    xs = sorted(values)
    n = len(xs)
    k, tail = 0, 0.0
    while True:
        tail += math.comb(n, k) / 2**n
        if tail > 0.025:
            break
        k += 1
    k = max(k, 1)
    return statistics.median(xs), (xs[k - 1], xs[n - k])


@dataclass
class TimingRun:
    """Per call: all kept call times, and one figure per kept round (seconds)."""

    samples: list[list[float]]
    per_round: list[list[float]]
    kept: int
    discarded: int
    loads: list[RoundLoad] = field(default_factory=list)
    contended_throughout: bool = False  # too few quiet rounds: every round was kept, contended or not

    def stats(self) -> list[LatencyStats]:
        out = []
        for s in self.samples:
            ms = np.asarray(s) * 1000.0
            out.append(
                LatencyStats(
                    p50=float(np.percentile(ms, 50)),
                    p90=float(np.percentile(ms, 90)),
                    p99=float(np.percentile(ms, 99)),
                )
            )
        return out

    def round_ratios(self, i: int, reference: int = 0) -> list[float]:
        """time(reference) / time(i), per round: > 1 means call i is faster."""
        return [r / c for r, c in zip(self.per_round[reference], self.per_round[i])]

    def speedup(self, i: int, reference: int = 0) -> tuple[float, Interval]:
        return median_interval(self.round_ratios(i, reference))

    def other_load(self) -> float | None:
        known = [lo.other_cores for lo in self.loads if lo.other_cores is not None]
        return statistics.median(known) if known else None

    def steal(self) -> float | None:
        known = [lo.steal for lo in self.loads if lo.steal is not None]
        return statistics.median(known) if known else None


def _round_figure(times: list[float]) -> float:
    return float(np.percentile(times, 25)) if len(times) >= 4 else min(times)


def time_interleaved(
    calls: Sequence[Callable[[], object]],
    *,
    device: str,
    warmup: int,
    rounds: int,
    seconds_per_model: float,
    max_rounds: int = 40,
    threads: int | None = None,
) -> TimingRun:
    """Times every call in interleaved rounds; see the module docstring for what is kept."""
    threads = threads or torch.get_num_threads()
    spare = spare_cores(threads)
    with torch.inference_mode():
        first = []
        for fn in calls:
            for _ in range(warmup - 1):
                fn()
            first.append(_time_call(fn, device))
        slowest = max(first)
        # a model slower than the budget still gets enough rounds for an interval if 4x the budget allows
        fit = int(seconds_per_model / slowest)
        floor = MIN_CI_ROUNDS if slowest * MIN_CI_ROUNDS <= 4 * seconds_per_model else 3
        wanted = max(floor, min(rounds, fit))
        per_round_s = seconds_per_model / max(rounds, 1)
        iters = [max(1, min(1000, int(per_round_s / max(t, 1e-6)))) for t in first]
        cap = time.perf_counter() + TIME_CAP * seconds_per_model * len(calls)
        kept = [[[], []] for _ in calls]  # per call: [samples, per-round figures]
        dropped = [[[], []] for _ in calls]
        loads: list[RoundLoad] = []
        r = 0
        while True:
            order = list(range(len(calls)))
            shift = r % len(order)
            order = order[shift:] + order[:shift]  # rotate so no model always runs first
            before = cpu_sample()
            this_round = {}
            for i in order:
                this_round[i] = [_time_call(calls[i], device) for _ in range(iters[i])]
            load = RoundLoad.between(before, cpu_sample())
            loads.append(load)
            contended = load.other_cores is not None and load.other_cores > spare
            target = dropped if contended else kept
            for i, times in this_round.items():
                target[i][0].extend(times)
                target[i][1].append(_round_figure(times))
            r += 1
            n_kept = len(kept[0][1])
            if r >= max(max_rounds, wanted) or (r >= wanted and time.perf_counter() > cap):
                break
            if n_kept >= wanted and _narrow([k[1] for k in kept]):
                break
    if len(kept[0][1]) < min(MIN_CI_ROUNDS, wanted):
        # contention throughout: keep every round and let the interval (and the noisy flag) say so
        merged = [[k[0] + d[0], k[1] + d[1]] for k, d in zip(kept, dropped)]
        return TimingRun(
            [m[0] for m in merged], [m[1] for m in merged], r, 0, loads, contended_throughout=any(d[1] for d in dropped)
        )
    return TimingRun([k[0] for k in kept], [k[1] for k in kept], len(kept[0][1]), len(dropped[0][1]), loads)


def _narrow(per_round: list[list[float]]) -> bool:
    base = per_round[0]
    for cand in per_round[1:]:
        _, (lo, hi) = median_interval([b / c for b, c in zip(base, cand)])
        if hi / lo > TARGET_WIDTH:
            return False
    return True
