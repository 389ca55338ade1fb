"""Per-key and per-address request limits: token buckets in the API process, answered with 429 and
`Retry-After`. Failed authentications count against the caller's address, so guessing keys is slow.

In memory, per API process (N processes allow N times the rate): a limit against abuse from one client,
not a quota; a shared store (Redis) would be needed for an exact global figure. Hand-written because
the libraries for this (slowapi, limits) decorate routes, and here the limit sits in the one
authentication dependency that every route already has."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict

MAX_KEYS = 100_000  # buckets kept; the least recently used go first (a flood of addresses cannot grow memory)


class TokenBucket:
    """`per_minute` requests a minute per key, in bursts of up to `per_minute`."""

    def __init__(self, per_minute: int):
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, per_minute))
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self.lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self.buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)

    def wait(self, key: str) -> int:
        """Seconds until `key` may make a request (0: now), without spending anything."""
        with self.lock:
            level = self._level(key, time.monotonic())
        return 0 if level >= 1 else math.ceil((1 - level) / self.rate)

    def take(self, key: str) -> int:
        """Spends one request; returns 0, or the seconds to wait when none is left (nothing spent)."""
        with self.lock:
            now = time.monotonic()
            level = self._level(key, now)
            if level < 1:
                self.buckets[key] = (level, now)
                return math.ceil((1 - level) / self.rate)
            self.buckets[key] = (level - 1, now)
            self.buckets.move_to_end(key)
            while len(self.buckets) > MAX_KEYS:
                self.buckets.popitem(last=False)
            return 0


_limiters: dict[tuple[str, int], TokenBucket] = {}


def limiter(name: str, per_minute: int) -> TokenBucket:
    """One bucket set per (purpose, rate) for the process: settings read per request stay consistent."""
    key = (name, per_minute)
    if key not in _limiters:
        _limiters[key] = TokenBucket(per_minute)
    return _limiters[key]


_slots: dict[tuple[str, int], TenantSlots] = {}


def tenant_slots(what: str, limit: int) -> TenantSlots:
    key = (what, limit)
    if key not in _slots:
        _slots[key] = TenantSlots(what, limit)
    return _slots[key]


class TenantSlots:
    """At most `limit` of one kind of long request at once per tenant (uploads streaming in, event streams
    open), per API process: one tenant's many slow requests cannot occupy the server for everyone. Over the
    limit the request is refused at once with 429 and Retry-After, before it holds anything."""

    def __init__(self, what: str, limit: int):
        self.what, self.limit = what, limit
        self.held: dict[str, int] = {}
        self.lock = threading.Lock()

    def acquire(self, tenant_id: str) -> bool:
        with self.lock:
            if self.held.get(tenant_id, 0) >= self.limit:
                return False
            self.held[tenant_id] = self.held.get(tenant_id, 0) + 1
            return True

    def release(self, tenant_id: str) -> None:
        with self.lock:
            left = self.held.get(tenant_id, 0) - 1
            if left > 0:
                self.held[tenant_id] = left
            else:
                self.held.pop(tenant_id, None)
