"""`GET /v1/jobs/{id}` as clients use it: polled, often, by many. A job's answer changes only when its row
does (`updated_at` moves with every write: progress, events, the end), so the answer is built once per
change (typed, through `JobOut`) and kept as its JSON; a poll is one indexed query for the stamp, which
also checks ownership, and the stored bytes. A stored report is validated once when the answer is built,
not on every read."""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import suppress

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.store.db import get_engine, loop_engine, session_factory
from app.store.tables.artifacts import Artifact
from app.store.tables.jobs import Job

from ..artifacts.schemas import ArtifactOut
from ..auth.service import Caller
from ..dependencies import ID
from ..errors import not_found
from .schemas import JobOut

CACHED_JOBS = 2048
NOT_READ = object()
STAMP = select(Job.updated_at).where(Job.id == bindparam("id"), Job.tenant_id == bindparam("tenant"))


def job_out(session: Session, job: Job) -> JobOut:
    artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.step_index))
    return JobOut.of(job, artifacts=[ArtifactOut.of(a) for a in artifacts])


class JobAnswers:
    def __init__(self, size: int = CACHED_JOBS):
        self.size = size
        self.answers: OrderedDict[str, tuple[object, bytes]] = OrderedDict()  # job id -> (updated_at, JSON)
        self.lock = threading.Lock()

    async def answer(self, tenant: Caller, job_id: str) -> Response:
        """One indexed query for the stamp, through a bare connection (an ORM session costs more than the
        query); a session, in the thread pool, only to build a changed job's answer. On SQLite (the embedded
        default) the stamp is read in the event loop (app/store/db.py `loop_engine` says why); a networked
        database is read in the thread pool."""
        if not ID.fullmatch(job_id):
            raise not_found("job", job_id)
        stamp = NOT_READ
        if (engine := loop_engine()) is not None:
            with suppress(OperationalError):
                stamp = self.stamp(engine, tenant, job_id)
        if stamp is NOT_READ:
            stamp = await run_in_threadpool(self.stamp, get_engine(), tenant, job_id)
        if (kept := self.kept(job_id, stamp)) is not None:
            return kept
        return await run_in_threadpool(self.build, tenant, job_id)

    @staticmethod
    def stamp(engine: Engine, tenant: Caller, job_id: str) -> object:
        with engine.connect() as connection:
            return connection.execute(STAMP, {"id": job_id, "tenant": tenant.id}).scalar()

    def build(self, tenant: Caller, job_id: str) -> Response:
        """A changed (or not yet kept) job's answer, built and kept with the stamp it was built at."""
        with session_factory()() as session:
            job = session.get(Job, job_id)
            if job is None or job.tenant_id != tenant.id:
                raise not_found("job", job_id)
            body = job_out(session, job).model_dump_json(by_alias=True).encode()
        with self.lock:
            self.answers[job_id] = (job.updated_at, body)
            self.answers.move_to_end(job_id)
            while len(self.answers) > self.size:
                self.answers.popitem(last=False)
        return Response(body, media_type="application/json")

    def kept(self, job_id: str, stamp: object) -> Response | None:
        if stamp is None:
            raise not_found("job", job_id)
        with self.lock:
            kept = self.answers.get(job_id)
        return Response(kept[1], media_type="application/json") if kept is not None and kept[0] == stamp else None


answers = JobAnswers()
