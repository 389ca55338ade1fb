"""How much a job may say: its child's events are a tenant's output written into the shared database, so
they are capped per job (count and bytes, across attempts, counted in the tenant's storage) and per second.
What goes over is dropped and counted, and the job's stream says so once ("output truncated"), and again
with the totals when the job ends. Progress and stage changes are kept to what a person can follow."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from workers.compression.contract.vocabulary import EventKind

LOG_LINE_CHARS = 2000  # one log event's message
STAGE_EVENTS = 500  # stage changes recorded as events; later ones update the job's stage only
FRONT_EVERY_S = 2.0  # a search's front so far, at most this often


@dataclass
class EventBudget:
    """Decides, per event the child sends, whether it is recorded. `spent_bytes` starts at what earlier
    attempts of the job wrote (the job row's `event_bytes`)."""

    max_bytes: int
    max_logs: int
    logs_per_s: float
    spent_bytes: int = 0
    logs: int = 0
    stages: int = 0
    dropped: int = 0
    dropped_bytes: int = 0
    truncated_said: bool = False
    _bucket: float = field(default=-1.0)
    _bucket_at: float = field(default_factory=time.monotonic)
    _front_at: float = 0.0

    def __post_init__(self) -> None:
        self._bucket = self.logs_per_s  # a second's worth of lines at once, then the rate

    def admit(self, kind: EventKind, data: dict) -> bool:
        size = len(json.dumps(data))
        if kind == EventKind.LOG and not self._log_allowed():
            return self._drop(size)
        if kind == EventKind.STAGE:
            self.stages += 1
            if self.stages > STAGE_EVENTS:
                return self._drop(size)
        if kind == EventKind.FRONT:
            now = time.monotonic()
            if now - self._front_at < FRONT_EVERY_S:
                return self._drop(size)
            self._front_at = now
        if self.spent_bytes + size > self.max_bytes:
            return self._drop(size)
        self.spent_bytes += size
        self.logs += kind == EventKind.LOG
        return True

    def _log_allowed(self) -> bool:
        if self.logs >= self.max_logs:
            return False
        now = time.monotonic()
        self._bucket = min(self.logs_per_s, self._bucket + (now - self._bucket_at) * self.logs_per_s)
        self._bucket_at = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    def _drop(self, size: int) -> bool:
        self.dropped += 1
        self.dropped_bytes += size
        return False

    def truncation_notice(self) -> str | None:
        """The one marker to record when output was first dropped (None after it was said, or if nothing was)."""
        if not self.dropped or self.truncated_said:
            return None
        self.truncated_said = True
        return (
            f"output truncated: this job's messages exceed its limits ({self.max_logs} log lines, "
            f"{self.max_bytes // 1024} KiB in all, {self.logs_per_s:g} lines a second); later ones are dropped"
        )

    def summary(self) -> str | None:
        if not self.dropped:
            return None
        return f"output truncated: {self.dropped} messages ({self.dropped_bytes // 1024} KiB) were dropped"
