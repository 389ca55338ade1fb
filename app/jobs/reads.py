"""`GET /v1/jobs/{id}` as clients use it: polled, often, by many. A job's answer changes only when its row
does (`updated_at` moves with every write: progress, events, the end), so the answer is built once per
change (typed, through `JobOut`) and kept as its JSON; a poll is one indexed query for the stamp, which
also checks ownership, and the stored bytes. A stored report is validated once when the answer is built,
not on every read."""

from __future__ import annotations

import threading
from collections import OrderedDict

from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.store.tables.artifacts import Artifact
from app.store.tables.jobs import Job

from ..artifacts.schemas import ArtifactOut
from ..auth.service import Caller
from ..dependencies import ID
from ..errors import not_found
from .schemas import JobOut

CACHED_JOBS = 2048


def job_out(session: Session, job: Job) -> JobOut:
    artifacts = session.scalars(select(Artifact).where(Artifact.job_id == job.id).order_by(Artifact.step_index))
    return JobOut.of(job, artifacts=[ArtifactOut.of(a) for a in artifacts])


class JobAnswers:
    def __init__(self, size: int = CACHED_JOBS):
        self.size = size
        self.answers: OrderedDict[str, tuple[object, bytes]] = OrderedDict()  # job id -> (updated_at, JSON)
        self.lock = threading.Lock()

    def read(self, session: Session, tenant: Caller, job_id: str) -> Response:
        stamp = (
            session.scalar(select(Job.updated_at).where(Job.id == job_id, Job.tenant_id == tenant.id))
            if ID.fullmatch(job_id)
            else None
        )
        if stamp is None:
            raise not_found("job", job_id)
        with self.lock:
            kept = self.answers.get(job_id)
        if kept is not None and kept[0] == stamp:
            return Response(kept[1], media_type="application/json")
        job = session.get(Job, job_id)
        body = job_out(session, job).model_dump_json(by_alias=True).encode()
        with self.lock:
            self.answers[job_id] = (job.updated_at, body)
            self.answers.move_to_end(job_id)
            while len(self.answers) > self.size:
                self.answers.popitem(last=False)
        return Response(body, media_type="application/json")


answers = JobAnswers()
