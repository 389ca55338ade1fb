"""Server-Sent Events for one job: replays its events from the database (progress, stage, log lines,
status changes) and follows new ones until the job ends. `Last-Event-ID` resumes a dropped stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from app.store.db import session_factory
from app.store.tables.jobs import TERMINAL, Job, JobEvent
from workers.compression.contract.vocabulary import EventKind

POLL_S = 0.5
KEEPALIVE_S = 15.0


def _fetch(job_id: str, after: int) -> tuple[list[tuple[int, str, dict]], str | None]:
    with session_factory()() as session:
        rows = session.execute(
            select(JobEvent.id, JobEvent.kind, JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.id > after)
            .order_by(JobEvent.id)
            .limit(500)
        ).all()
        status = session.scalar(select(Job.status).where(Job.id == job_id))
    return [tuple(r) for r in rows], status


def _format(event_id: int, kind: str, data: dict) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


async def event_stream(
    job_id: str, after: int, request: Request, on_end: Callable[[], None] = lambda: None
) -> AsyncIterator[str]:
    """The stream; `on_end` runs however it ends (the job's end, the client gone, the server stopping)."""
    try:
        async for chunk in _events(job_id, after, request):
            yield chunk
    finally:
        on_end()


async def _events(job_id: str, after: int, request: Request) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    idle = 0.0
    while True:
        rows, status = await run_in_threadpool(_fetch, job_id, after)
        for event_id, kind, data in rows:
            after = event_id
            yield _format(event_id, kind, data)
            if kind == EventKind.STATUS and data.get("status") in TERMINAL:
                return
        if status is None:  # deleted under us
            return
        if not rows and status in TERMINAL:
            return  # the final status event was sent on an earlier connection
        if await request.is_disconnected():
            return
        if rows:
            idle = 0.0
        else:
            idle += POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
