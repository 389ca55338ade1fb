"""Worker presence: each worker's main process records itself (queues, isolation) and beats; the API
reads who was seen recently (/readyz)."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from .db import session_scope, utcnow
from .tables.workers import WorkerSeen


def beat(name: str, queues: list[str], isolation: dict) -> None:
    with session_scope() as session:
        row = session.get(WorkerSeen, name)
        if row is None:
            session.add(WorkerSeen(name=name, queues=",".join(queues), isolation=isolation))
        else:
            row.queues, row.isolation, row.seen_at = ",".join(queues), isolation, utcnow()


def keep_beating(name: str, queues: list[str], isolation: dict, every_s: float) -> threading.Thread:
    """A daemon thread of the worker's main process; a store outage skips beats, it never stops the worker."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                beat(name, queues, isolation)
            except Exception:
                pass

    beat(name, queues, isolation)
    thread = threading.Thread(target=loop, name="presence", daemon=True)
    thread.start()
    return thread


def seen_since(seconds: float) -> list[WorkerSeen]:
    with session_scope() as session:
        cutoff = utcnow() - timedelta(seconds=seconds)
        rows = session.scalars(select(WorkerSeen).where(WorkerSeen.seen_at >= cutoff).order_by(WorkerSeen.name))
        return [WorkerSeen(name=r.name, queues=r.queues, isolation=r.isolation, seen_at=r.seen_at) for r in rows]
