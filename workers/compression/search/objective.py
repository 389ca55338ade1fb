"""What "better" means for a compressed model: its quality drop against the original, its gain for an
objective, the Pareto front over (quality, speed, size), and the recommendation under an accuracy budget.
Plain arithmetic on measured figures, shared by the search and the report; the drop and the budget are the
quality rule's (measure/quality.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..measure.quality import budget_words, lost_words, measured_drop, within_budget


@dataclass(frozen=True)
class Point:
    """One measured candidate as the search and the report compare it (ratios > 1 are better)."""

    key: object  # whatever identifies the candidate to the caller
    drop: float  # accuracy (or agreement) lost against the original; lower is better
    speedup: float  # geometric mean of the batch-1 and large-batch speedups
    size_ratio: float


def speedup(speedup_b1: float | None, speedup_bn: float | None) -> float:
    """Latency gain as one number: the geometric mean of the batch sizes measured (both matter to a user)."""
    speeds = [s for s in (speedup_b1, speedup_bn) if s]
    return math.exp(sum(map(math.log, speeds)) / len(speeds)) if speeds else 0.0


def speed_gain(ratios, language_model: bool) -> float:
    """The speed a candidate is ranked by (`ratios`: its Ratios against the original). A language model whose
    decoding was timed is ranked by its decode tokens/s against the original's: what its users wait on, and
    what its verdict is judged on (a forward pass of a whole sequence is not how it runs). Else the mean of
    the batch-1 and large-batch speedups."""
    if language_model and ratios.speedup_decode:
        return ratios.speedup_decode
    return speedup(ratios.speedup_b1, ratios.speedup_bN)


def quality_drop(base, m) -> float:
    """The drop the accuracy budget is checked against, by the one quality rule (measure/quality.py);
    `base` and `m` are Measurements. Unscored counts as lost."""
    lost = measured_drop(base, m)
    return math.inf if lost is None else lost


def gain(objective: str, p: Point) -> float:
    if objective == "latency":
        return p.speedup
    if objective == "size":
        return p.size_ratio
    return math.sqrt(max(p.speedup, 0.0) * p.size_ratio)  # balanced


def dominates(a: Point, b: Point) -> bool:
    no_worse = a.drop <= b.drop and a.speedup >= b.speedup and a.size_ratio >= b.size_ratio
    better = a.drop < b.drop or a.speedup > b.speedup or a.size_ratio > b.size_ratio
    return no_worse and better


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on quality, speed and size at once; ordered by speed."""
    front = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(front, key=lambda p: -p.speedup)


@dataclass(frozen=True)
class Recommendation:
    point: Point
    within_budget: bool
    reason: str


def recommend(
    points: Sequence[Point], objective: str, max_drop: float, language_model: bool = False
) -> Recommendation | None:
    """The best point for the objective among those within the accuracy budget; when none is, the one that
    loses least, with the reason in words. None only when there are no points at all."""
    if not points:
        return None
    within = [p for p in points if within_budget(p.drop, max_drop)]
    if within:
        best = max(within, key=lambda p: (gain(objective, p), -p.drop))
        speed = " (speed: decode tokens/s)" if language_model and objective != "size" else ""
        reason = (
            f"best {objective} gain{speed} ({gain(objective, best):.2f}x) among {len(within)} candidate(s) within the "
            f"{budget_words(max_drop, language_model)} (this one loses {lost_words(best.drop, language_model)})"
        )
        return Recommendation(best, True, reason)
    closest = min(points, key=lambda p: (p.drop, -gain(objective, p)))
    reason = (
        f"no candidate stayed within the {budget_words(max_drop, language_model)}; this is the closest, "
        f"losing {lost_words(closest.drop, language_model)}. Allow a larger max_accuracy_drop, a longer budget_minutes "
        f"(more recovery training), or more training data"
    )
    return Recommendation(closest, False, reason)
