"""Job state transitions on a real database (SQLite here; the service tests run them on PostgreSQL):
one owner per job, one end per job, and the sweeper's three outcomes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.orm import sessionmaker

from app.auth.service import get_or_create_tenant
from app.store.db import make_engine, utcnow
from app.store.job_state import claim, finish, heartbeat, requeue_or_fail_stale, stale_cutoff
from app.store.tables.jobs import Job, JobEvent
from app.store.tables.models import Model
from tests.stack import ROOT


@pytest.fixture
def session(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    command.upgrade(config, "head")
    engine = make_engine(url)
    with sessionmaker(engine, expire_on_commit=False)() as s:
        tenant = get_or_create_tenant(s, "t")
        s.add(
            Model(id="mdl_1", tenant_id=tenant.id, name="m", format="pt2", sha256="0" * 64, size_bytes=1, blob_key="k")
        )
        s.flush()  # no ORM relationships: rows are written in the order they are flushed
        s.add(Job(id="job_1", tenant_id=tenant.id, model_id="mdl_1", recipe={"steps": []}, device="cpu", queue="cpu"))
        s.commit()
        yield s
    engine.dispose()


def test_one_worker_owns_a_job(session):
    fresh = stale_cutoff(60)
    assert claim(session, "job_1", "w1", fresh, 3).attempts == 1
    assert claim(session, "job_1", "w2", fresh, 3) is None  # alive elsewhere
    assert heartbeat(session, "job_1", "w1", 0.5, "measuring")
    assert not heartbeat(session, "job_1", "w2")
    assert session.get(Job, "job_1").stage == "measuring"


def test_a_job_ends_once(session):
    claim(session, "job_1", "w1", stale_cutoff(60), 3)
    assert not finish(session, "job_1", "succeeded", worker="w2")  # not its owner
    assert finish(session, "job_1", "failed", worker="w1", code="timeout", message="too slow")
    assert not finish(session, "job_1", "succeeded", worker="w1")
    job = session.get(Job, "job_1")
    assert (job.status, job.error_code, job.duration_s is not None) == ("failed", "timeout", True)
    statuses = [e.data["status"] for e in session.query(JobEvent).order_by(JobEvent.id) if e.kind == "status"]
    assert statuses == ["running", "failed"]


def _go_silent(session, attempts: int, cancel: bool = False) -> None:
    job = session.get(Job, "job_1")
    job.status, job.worker, job.attempts = "running", "w1", attempts
    job.heartbeat_at, job.cancel_requested = utcnow() - timedelta(minutes=5), cancel
    session.commit()


@pytest.mark.parametrize(
    ("attempts", "cancel", "expected"), [(1, False, "queued"), (3, False, "failed"), (1, True, "cancelled")]
)
def test_sweeper(session, attempts, cancel, expected):
    _go_silent(session, attempts, cancel)
    assert requeue_or_fail_stale(session, stale_cutoff(60), 3) == [("job_1", expected)]
    job = session.get(Job, "job_1")
    session.refresh(job)
    assert job.status == expected
    if expected == "failed":
        assert job.error_code == "worker_lost" and "stopped responding 3 times" in job.error_message
    if expected == "queued":  # a redelivered or re-sent message may now claim it
        assert claim(session, "job_1", "w2", stale_cutoff(60), 3).attempts == attempts + 1
    assert requeue_or_fail_stale(session, stale_cutoff(60), 3) == []  # nothing twice


def _queued(session, job_id: str, tenant_id: str, model_id: str, created_at, queue: str = "cpu") -> None:
    device = "cuda" if queue == "gpu" else "cpu"
    session.add(Job(id=job_id, tenant_id=tenant_id, model_id=model_id, recipe={"steps": []}, device=device,
                    queue=queue, created_at=created_at))  # fmt: skip


def _tenant_with_model(session, name: str, model_id: str):
    tenant = get_or_create_tenant(session, name)
    session.add(Model(id=model_id, tenant_id=tenant.id, name="m", format="pt2", sha256=model_id[-1] * 64,
                      size_bytes=1, blob_key=model_id))  # fmt: skip
    session.flush()
    return tenant


def test_dispatch_is_fair_between_tenants(session):
    """Tenant a queued six jobs before tenant b queued one: b's comes right after a's first, not after all
    six; a tenant at its running limit waits while another's job can run."""
    from app.store.job_state import dispatch_order

    a, t0 = session.get(Job, "job_1").tenant_id, utcnow() - timedelta(minutes=10)
    a_jobs = [f"job_a{i}" for i in range(5)]
    for i, job_id in enumerate(a_jobs):
        _queued(session, job_id, a, "mdl_1", t0 + timedelta(seconds=i))
    other = _tenant_with_model(session, "b", "mdl_b")
    _queued(session, "job_b", other.id, "mdl_b", t0 + timedelta(minutes=1))
    _queued(session, "job_gpu", other.id, "mdl_b", t0, queue="gpu")
    session.get(Job, "job_1").created_at = t0 - timedelta(seconds=1)
    session.commit()
    fresh = stale_cutoff(60)
    assert dispatch_order(session, "cpu", 4, 3)[0] == "job_1"  # nobody has run anything yet: the oldest first
    assert claim(session, "job_1", "w1", fresh, 3)  # a now runs one
    order = dispatch_order(session, "cpu", 4, 3)
    assert order[0] == "job_b" and order[1:] == a_jobs  # b, which runs nothing, goes before a's backlog
    assert claim(session, "job_b", "w2", fresh, 3)
    # both run one; a's last job started before b's: a's turn
    assert dispatch_order(session, "cpu", 4, 3)[0] == "job_a0"
    assert dispatch_order(session, "cpu", 1, 3) == []  # each tenant at a limit of one: nothing may start
    assert dispatch_order(session, "gpu", 4, 3) == ["job_gpu"]  # queues are dispatched apart


def test_only_jobs_that_could_start_need_a_message(session):
    """The sweeper re-sends messages for what could start now: per tenant, its free places under the
    running limit; a capped tenant's backlog neither needs messages nor hides another tenant's job."""
    from app.store.job_state import dispatch_order, runnable_now

    tenant, t0 = session.get(Job, "job_1").tenant_id, utcnow() - timedelta(minutes=10)
    for i in range(5):
        _queued(session, f"job_q{i}", tenant, "mdl_1", t0 + timedelta(seconds=i))
    other = _tenant_with_model(session, "c", "mdl_c")
    _queued(session, "job_c", other.id, "mdl_c", t0 + timedelta(minutes=5))
    session.commit()
    assert claim(session, "job_1", "w1", stale_cutoff(60), 3)  # the first tenant runs one
    assert runnable_now(session, "cpu", 2, 3) == ["job_q0", "job_c"]  # one free place each
    assert runnable_now(session, "cpu", 1, 3) == ["job_c"]  # the first tenant is at its limit
    assert dispatch_order(session, "cpu", 1, 3) == ["job_c"]


def test_job_queues_hold_only_job_tokens():
    """The sweeper compares a job queue's depth with its runnable jobs: a webhook retry waiting there would
    hide a lost job message, so webhooks ride the inspection queue every worker serves."""
    from app.store.broker import CPU_QUEUE, INSPECT_QUEUE, RUN_JOB_TASK, WEBHOOK_TASK, make_celery

    router = make_celery().amqp.router
    assert router.route({}, WEBHOOK_TASK, args=("job_1", 2), kwargs={})["queue"].name == INSPECT_QUEUE
    assert router.route({}, RUN_JOB_TASK, args=("job_1",), kwargs={})["queue"].name == CPU_QUEUE


def test_an_inspection_has_one_worker_and_a_lost_one_is_released_once(session):
    from app.store.upload_state import lost_inspections, start_inspection

    fresh = stale_cutoff(60)
    assert start_inspection(session, Model, "mdl_1", fresh)
    assert not start_inspection(session, Model, "mdl_1", fresh)  # a redelivered message: a live worker beats
    assert lost_inspections(session, fresh) == []
    silent = utcnow() + timedelta(seconds=1)  # as if its beat had stopped
    assert lost_inspections(session, silent) == [("model", "mdl_1")]
    assert lost_inspections(session, silent) == []  # sent again once, however many sweepers look
    assert start_inspection(session, Model, "mdl_1", fresh)  # the new message's worker takes it
