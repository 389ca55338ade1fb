"""The search's wall-clock budget: what is spent, what measuring the front again at the end will take, and
what a candidate is likely to cost, learned from the candidates of its kind built so far."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..measure import MeasureSettings
from . import space
from .evaluator import Evaluated

UNKNOWN_BUILD_S = 10.0  # a build whose kind has not been timed yet


class OutOfTime(BaseException):
    """Raised from progress callbacks when the budget is spent; BaseException so no library swallows it."""


class Budget:
    def __init__(self, budget_s: float, settings: MeasureSettings, quick: MeasureSettings):
        self.start = time.monotonic()
        self.budget_s = budget_s
        self.settings, self.quick = settings, quick  # the job's timing, and the search's shorter one
        self.cost_s: dict[str, float] = {}  # seconds per candidate (per epoch for training) by kind
        self.extra_models, self.extra_kind = 0, ""  # built after the search and measured beside the front

    def also_at_the_end(self, models: int, like: str) -> None:
        """Models the search builds after its candidates (the peers) and measures beside the front, each about
        as costly to build as a candidate of kind `like`: their time is reserved too, so the whole step ends
        within the budget (an 8-minute search that built and measured the peers after its reserve ran 511 s)."""
        self.extra_models, self.extra_kind = models, like

    def extra_s(self) -> float:
        if not self.extra_models:
            return 0.0
        each = self.cost_s.get(self.extra_kind, max(self.cost_s.values(), default=UNKNOWN_BUILD_S))
        return each * self.extra_models

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def reserve(self, front: Sequence[Evaluated]) -> float:
        """What measuring the front again at the end will take: each member's load (inductor compiles) and
        measurement, at the job's timing rather than the search's."""
        extra = 2 * max(0.0, self.settings.seconds_per_model - self.quick.seconds_per_model)
        per_model = max((e.measure_s for e in front), default=0.0) + extra
        return per_model * (len(front) + 1 + self.extra_models) + sum(e.load_s for e in front) + self.extra_s()

    def remaining(self, front: Sequence[Evaluated]) -> float:
        return self.budget_s - self.elapsed() - self.reserve(front)

    def check(self, front: Sequence[Evaluated]) -> None:
        # the first candidate always finishes, so even the smallest budget returns a result (the front is
        # empty until one is measured)
        if front and self.remaining(front) <= 0:
            raise OutOfTime

    def estimate(self, cand: space.Candidate) -> float:
        # a kind not built yet is assumed as cheap as the cheapest so far: if it is not, the budget stops it
        return self.cost_s.get(_kind(cand), min(self.cost_s.values(), default=0.0)) * max(1, cand.epochs)

    def spent(self, cand: space.Candidate, seconds: float) -> None:
        """What building and measuring `cand` took, for the estimates of the candidates of its kind."""
        self.cost_s[_kind(cand)] = seconds / max(1, cand.epochs)


def _kind(cand: space.Candidate) -> str:
    return "+".join(f"{s.method}:{getattr(s, 'scheme', getattr(s, 'kind', ''))}" for s in cand.steps)
