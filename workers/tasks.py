"""Celery tasks. Each takes ids, reads and records state in the database, is safe to run twice (a
redelivered message finds the work done or owned and returns), and runs the engine in a supervised
child process (workers/supervisor.py)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from pathlib import Path

import psutil
from celery.signals import setup_logging, worker_process_init
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from app.store import blob_refs
from app.store.blobs import get_blob_store
from app.store.broker import INSPECT_TASK, RUN_JOB_TASK, WEBHOOK_TASK, get_celery
from app.store.config import get_settings
from app.store.db import get_engine, session_factory, session_scope
from app.store.job_state import add_event, claim, dispatch_order, finish, heartbeat, queued_of_tenant, stale_cutoff
from app.store.logs import configure_logging, job_id_var
from app.store.tables.artifacts import Artifact, Measurement
from app.store.tables.datasets import Dataset
from app.store.tables.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, Job
from app.store.tables.models import Model
from app.store.tables.uploads import INVALID, PENDING, READY
from app.store.upload_state import UPLOAD_TABLES, beat_inspection, start_inspection
from workers.compression.contract.errors import without_paths
from workers.compression.contract.formats import FILE_SUFFIX, ModelFormat
from workers.compression.contract.inspection import DatasetInfo, Isolation, ModelInfo
from workers.compression.contract.load import LoadOptions
from workers.compression.contract.measure import MeasureSettings
from workers.compression.contract.protocol import (
    CheckpointEvent,
    InspectDataset,
    InspectModel,
    LogEvent,
    PartialEvent,
    ProgressEvent,
    RunRecipe,
    StopReason,
)
from workers.compression.contract.recipe import METHODS, Recipe
from workers.compression.contract.report import PartialResults, Report
from workers.compression.contract.vocabulary import Device, EventKind, JobErrorCode

from . import webhooks
from .compile_cache import TenantCompileCache
from .event_budget import LOG_LINE_CHARS, EventBudget
from .hardware import worker_has_cuda
from .results import UntrustedOutput, private_copy, store_results
from .sandbox import Mounts, SandboxLimits, probe
from .supervisor import ChildOutcome, supervise

log = logging.getLogger("squeeze.worker")


def _isolation() -> Isolation:
    return probe(get_settings().sandbox)  # checked at the worker's start (workers/main.py): cached


celery = get_celery()


@setup_logging.connect
def _logging(**_) -> None:
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _fresh_connections(**_) -> None:
    get_engine().dispose(close=False)  # never share a parent's database connections after fork


def _worker_name(task) -> str:
    return f"{task.request.hostname or socket.gethostname()}:{os.getpid()}"


def _dead_owner_here(session, job_id: str, worker: str) -> str | None:
    """The job's owner when it was a pool process of this very worker that has died (reject_on_worker_lost
    redelivers its message at once): the job can be taken over now instead of after the heartbeat timeout.
    Only the message's own job is checked: another node's processes are not visible from here, and a node
    name two workers share would make their live processes look dead."""
    owner = session.scalar(select(Job.worker).where(Job.id == job_id, Job.status == RUNNING))
    node, _, pid = (owner or "").rpartition(":")
    if not owner or node != worker.rpartition(":")[0] or not pid.isdigit() or int(pid) == os.getpid():
        return None
    return None if psutil.pid_exists(int(pid)) else owner


def _take_next(session, hint: str, worker: str) -> Job | None:
    """The job this message buys. A message names the job it was sent for (`hint`), but every message is a
    token for one unit of work on its queue: the hint is taken over first if a dead pool process of this
    worker held it or its worker went silent (a redelivery); otherwise the queued job fairest between
    tenants (app/store/job_state.dispatch_order), which may be another tenant's than the hint's. Each queued
    job has a message, so a token spent on another job leaves that job's message for the hint."""
    settings = get_settings()
    stale, attempts = stale_cutoff(settings.heartbeat_timeout_s), settings.job_max_attempts
    row = session.execute(select(Job.queue, Job.status, Job.heartbeat_at).where(Job.id == hint)).first()
    if row is None:
        return None  # the job was deleted; every other queued job has its own message
    limit = settings.max_running_jobs_per_tenant
    if row.status == RUNNING:
        dead = _dead_owner_here(session, hint, worker)
        # a takeover is not limited (the job is counted as running already); the limit applies should the
        # sweeper have put it back in the queue meanwhile
        if (dead or (row.heartbeat_at is not None and row.heartbeat_at < stale)) and (
            job := claim(session, hint, worker, stale, attempts, dead_owner=dead, max_running_per_tenant=limit)
        ):
            return job
    for candidate in dispatch_order(session, row.queue, limit, attempts):
        if job := claim(session, candidate, worker, stale, attempts, max_running_per_tenant=limit):
            return job
    return None


def _kick(tenant_id: str, queue: str) -> None:
    """A job ended: if its tenant has jobs waiting, send a token for one. A token that found only tenants at
    their running limit was spent on nothing, and this is the moment one of them may run again (an extra
    token finds nothing to do and costs one query)."""
    try:
        with session_factory()() as session:
            waiting = queued_of_tenant(session, tenant_id, queue)
        if waiting:
            celery.send_task(RUN_JOB_TASK, args=[waiting], queue=queue)
    except Exception:  # the store or broker is down: the sweeper re-sends what waits too long
        log.exception("could not send the next token for tenant %s", tenant_id)


def _mounts(*parts: str) -> Mounts:
    """A job's (or an inspection's) private folder on this worker, and how its child sees it."""
    settings = get_settings()
    return Mounts(settings.home.resolve() / "work" / Path(*parts), sandboxed=settings.sandbox != "off")


def _limits() -> SandboxLimits:
    s = get_settings()
    return SandboxLimits(
        processes=s.sandbox_processes, disk_mb=s.sandbox_disk_mb, tmp_mb=s.sandbox_tmp_mb, log_bytes=s.child_log_bytes
    )


INPUT_SUFFIX = {"npz": ".npz", "safetensors": ".safetensors", "image_zip": ".zip", "jsonl": ".jsonl", "csv": ".csv"}


# ---------------------------------------------------------------- uploads


# an unreachable store is retried with back-off rather than acked away (the job would stay queued forever)
STORE_RETRY = dict(autoretry_for=(OperationalError,), retry_backoff=True, retry_backoff_max=60, max_retries=20)


@celery.task(name=INSPECT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, **STORE_RETRY)
def inspect_upload(self, kind: str, upload_id: str) -> None:
    table = UPLOAD_TABLES[kind]
    settings = get_settings()
    with session_scope() as session:
        if not start_inspection(session, table, upload_id, stale_cutoff(settings.heartbeat_timeout_s)):
            return  # deleted, inspected already, or being inspected by a live worker (a redelivered message)
        row = session.get(table, upload_id)
        if row is None:
            return  # deleted meanwhile
        host = get_blob_store().local_path(row.blob_key)
        mounts = _mounts("inspect", upload_id)
        if kind == "model":
            path = mounts.input(host, "model" + FILE_SUFFIX[ModelFormat(row.format)])
            load = LoadOptions.model_validate({**(row.load_options or {}), "format": row.format})
            work = InspectModel(path=path, load=load)
        else:
            work = InspectDataset(path=mounts.input(host, "dataset" + INPUT_SUFFIX.get(row.format, "")))
    outcome = supervise(
        work,
        mounts,
        memory_limit_mb=settings.job_memory_limit_mb,
        time_limit_s=settings.inspect_time_limit_s,
        sandbox=mounts.sandboxed,
        limits=_limits(),
        should_stop=InspectionBeat(table, upload_id, settings.heartbeat_interval_s),
    )
    shutil.rmtree(mounts.host, ignore_errors=True)
    with session_scope() as session:
        row = session.get(table, upload_id)
        if row is None or row.status != PENDING:
            return
        expected = ModelInfo if kind == "model" else DatasetInfo
        if outcome.ok and not isinstance(outcome.info, expected):  # a child that answered for another kind
            outcome = ChildOutcome(ok=False, code=JobErrorCode.INVALID_OUTPUT, message=f"the inspection did not describe a {kind}")
        if outcome.ok:
            info = outcome.info.model_copy(update={"isolation": _isolation()})
            row.status, row.info = READY, info.model_dump(mode="json", exclude_none=True)
        else:
            row.status, row.error_code, row.error_message = INVALID, outcome.code, outcome.message
    log.info("%s %s inspected: %s", kind, upload_id, "ready" if outcome.ok else outcome.code)


class InspectionBeat:
    """Polled by the supervisor while the child inspects: beats for the upload every `every_s` (a store
    outage skips a beat; the inspection goes on). Never asks to stop."""

    def __init__(self, table, upload_id: str, every_s: float):
        self.table, self.upload_id, self.every_s, self.last = table, upload_id, every_s, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            try:
                with session_scope() as session:
                    beat_inspection(session, self.table, self.upload_id)
            except Exception:
                log.warning("could not beat for the inspection of %s", self.upload_id, exc_info=True)
        return None


# ---------------------------------------------------------------- jobs


class JobWatch:
    """What the supervisor asks between polls: stop for cancel or lost ownership; forwards progress."""

    def __init__(self, job_id: str, worker: str, heartbeat_s: float, mounts: Mounts):
        self.job_id, self.worker, self.heartbeat_s, self.mounts = job_id, worker, heartbeat_s, mounts
        self.session = session_factory()()
        settings = get_settings()
        spent = self.session.scalar(select(Job.event_bytes).where(Job.id == job_id)) or 0
        self.budget = EventBudget(
            settings.job_event_bytes, settings.job_log_lines, settings.job_log_lines_per_s, spent_bytes=spent
        )
        self.last_beat = 0.0
        self.stage: str | None = None
        self.progress: float | None = None
        self.dirty = False
        self.last_event_progress = -1.0
        # what a search step has found so far (engine file names): shown while the job runs, and stored with
        # its artifacts if the job is cancelled or stopped before it finishes
        self.partial: Report | None = None
        self.partial_unsaved = False

    def record(self, kind: EventKind, data: dict) -> None:
        """An event of the child's, if the job's budget admits it (workers/event_budget.py)."""
        if self.budget.admit(kind, data):
            add_event(self.session, self.job_id, kind, data)
        elif notice := self.budget.truncation_notice():
            add_event(self.session, self.job_id, EventKind.LOG, {"message": notice, "truncated": True})

    def on_event(self, event: ProgressEvent | LogEvent | CheckpointEvent | PartialEvent) -> None:
        if isinstance(event, ProgressEvent):
            self.progress, stage = max(0.0, min(1.0, event.progress)), without_paths(event.stage)[:300]
            if stage != self.stage:
                self.stage = stage
                self.record(EventKind.STAGE, {"stage": stage, "progress": self.progress})
            elif self.progress - self.last_event_progress >= 0.01:
                self.record(EventKind.PROGRESS, {"progress": self.progress, "stage": stage})
            else:
                self.dirty = True
                return
            self.last_event_progress = self.progress
            self.dirty = True
        elif isinstance(event, LogEvent):
            self.record(EventKind.LOG, {"message": without_paths(event.message)[:LOG_LINE_CHARS]})
            self.dirty = True
        elif isinstance(event, CheckpointEvent):
            # the child names the file; only a plain file in the job's own checkpoint folder is taken
            if (path := self.mounts.host_file(event.path, self.mounts.checkpoints)) is not None:
                save_checkpoint(self.job_id, path)
            else:
                log.warning("checkpoint outside the job's folder ignored: %.200s", event.path)
        elif isinstance(event, PartialEvent):
            self.partial, self.partial_unsaved, self.dirty = event.report, True, True
            self.record(EventKind.FRONT, {"front": front_summary(self.partial)})

    def should_stop(self) -> StopReason | None:
        try:
            return self._check()
        except SQLAlchemyError as e:  # the store is briefly unreachable: keep the job running, beat later
            self.session.rollback()
            log.warning("heartbeat failed: %s", e)
            return None

    def _check(self) -> StopReason | None:
        now = time.monotonic()
        if self.dirty or now - self.last_beat >= self.heartbeat_s:
            self.dirty, self.last_beat = False, now
            results = self.partial if self.partial and self.partial_unsaved else None
            if not heartbeat(self.session, self.job_id, self.worker, self.progress, self.stage, results):
                return StopReason.LOST
            self.partial_unsaved = False
        self.session.expire_all()
        job = self.session.get(Job, self.job_id)
        if job is None or job.status != RUNNING or job.worker != self.worker:
            return StopReason.LOST
        return StopReason.CANCEL if job.cancel_requested else None

    def close(self) -> None:
        if summary := self.budget.summary():
            add_event(self.session, self.job_id, EventKind.LOG, {"message": summary, "truncated": True})
        self.session.commit()
        self.session.close()


def front_summary(report: Report) -> list[dict]:
    """The front of a search so far, a line per member, for the job's event stream."""
    return [
        {
            "label": (member.details or {}).get("label"),
            "runtime": member.measurement.runtime,
            "accuracy": member.measurement.accuracy,
            "agreement": member.measurement.agreement,
            "speedup_b1": member.speedup_b1,
            "speedup_bN": member.speedup_bN,
            "size_ratio": member.size_ratio,
            "recommended": bool(member.recommended),
        }
        for step in report.steps
        for member in step.front or []
    ]


# ---------------------------------------------------------------- checkpoints
# Training steps checkpoint every epoch into the attempt's folder; each file is copied to the blob store
# at once, and a retried attempt (its worker died) starts with them, so training resumes, not restarts.


def _checkpoint_prefix(job_id: str) -> str:
    return f"checkpoints/{job_id}"


def save_checkpoint(job_id: str, path: Path) -> None:
    try:
        with private_copy(path) as copy:  # the child may still change the file: store what was checked
            get_blob_store().put_named(copy, f"{_checkpoint_prefix(job_id)}/{path.name}")
    except Exception:  # a lost checkpoint costs a retry some epochs, never the job
        log.exception("saving checkpoint %s failed", path.name)


def restore_checkpoints(job_id: str, folder: Path) -> list[str]:
    store = get_blob_store()
    folder.mkdir(parents=True, exist_ok=True)
    restored = []
    for key in store.list_named(_checkpoint_prefix(job_id)):
        name = key.rsplit("/", 1)[-1]
        if store.fetch_named(key, folder / name):
            restored.append(name)
    return restored


def drop_checkpoints(job_id: str) -> None:
    store = get_blob_store()
    try:
        for key in store.list_named(_checkpoint_prefix(job_id)):
            store.delete(key)
    except Exception:
        log.exception("removing the checkpoints of %s failed", job_id)


def _job_work(session, job: Job, mounts: Mounts, device: str) -> RunRecipe:
    settings, store = get_settings(), get_blob_store()
    model = session.get(Model, job.model_id)
    recipe = Recipe.model_validate(job.recipe)  # validated at submission; stored as its JSON
    # other models the recipe names (a distillation student), checked for ownership at submission
    referenced = {}
    for step in recipe.steps:
        for ref in METHODS[step.method].references(step):
            if (row := session.get(Model, ref)) is not None:  # deleted since: the step says it is missing
                suffix = FILE_SUFFIX[ModelFormat(row.format)]
                referenced[ref] = mounts.input(store.local_path(row.blob_key), f"model-{ref}{suffix}")

    def dataset_path(dataset_id: str | None, name: str) -> str | None:
        if not dataset_id:
            return None
        row = session.get(Dataset, dataset_id)
        return mounts.input(store.local_path(row.blob_key), name + INPUT_SUFFIX.get(row.format, ""))

    return RunRecipe(
        model_path=mounts.input(store.local_path(model.blob_key), "model" + FILE_SUFFIX[ModelFormat(model.format)]),
        recipe=recipe,
        out_dir=mounts.sandbox_path(mounts.out),
        data_path=dataset_path(job.dataset_id, "dataset"),
        eval_data_path=dataset_path(job.eval_dataset_id, "eval_dataset"),
        load=LoadOptions.model_validate({**(model.load_options or {}), "format": model.format}),
        models=referenced,
        checkpoint_dir=mounts.sandbox_path(mounts.checkpoints),
        measure=MeasureSettings(
            batch=settings.measure_batch,
            threads=settings.threads,
            device=device,
            rounds=settings.measure_rounds,
            max_rounds=max(settings.measure_rounds, settings.measure_max_rounds),
            runtime_baselines=settings.measure_runtime_baselines,
            seconds_per_model=settings.measure_seconds,
            eval_samples=settings.measure_eval_samples,
        ),
    )


@celery.task(name=RUN_JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, **STORE_RETRY)
def run_job(self, job_id: str) -> None:
    """`job_id`: the job this message was sent for; the job run is the one `_take_next` picks."""
    settings, worker = get_settings(), _worker_name(self)
    with session_factory()() as session:
        job = _take_next(session, job_id, worker)
        if job is None:
            log.info(
                "no job to run for this message: finished, cancelled, running elsewhere, or its tenant at its limit",
                extra={"job_id": job_id},
            )
            return
        job_id, tenant_id, queue = job.id, job.tenant_id, job.queue
    token = job_id_var.set(job_id)
    try:
        with session_factory()() as session:
            job = session.get(Job, job_id)
            if job.device == Device.CUDA and not worker_has_cuda():
                finish(
                    session,
                    job_id,
                    FAILED,
                    worker=worker,
                    code=JobErrorCode.NO_GPU,
                    message="this job asked for device 'cuda' but reached a worker without a GPU",
                )
                return
            device = Device.CUDA if job.device in (Device.CUDA, Device.AUTO) and worker_has_cuda() else Device.CPU
            job.device_used = device
            session.commit()
            mounts = _mounts("jobs", job_id, f"attempt{job.attempts}")
            mounts.compile_cache = settings.compile_cache_mb > 0
            work = _job_work(session, job, mounts, device)
        cache = TenantCompileCache(settings.home.resolve() / "cache", tenant_id, settings.compile_cache_mb)
        cache.check_out(mounts.cache)
        if restored := restore_checkpoints(job_id, mounts.checkpoints):
            log.info("resuming from checkpoints %s", restored)
        log.info("job started on %s (attempt %d)", device, job.attempts)
        watch = JobWatch(job_id, worker, settings.heartbeat_interval_s, mounts)
        try:
            outcome = supervise(
                work,
                mounts,
                sandbox=mounts.sandboxed,
                limits=_limits(),
                memory_limit_mb=settings.job_memory_limit_mb,
                time_limit_s=settings.job_time_limit_s,
                on_event=watch.on_event,
                should_stop=watch.should_stop,
            )
        finally:
            watch.close()
        _conclude(job_id, worker, outcome, mounts.out, partial=watch.partial)
        if outcome.ok:
            cache.check_in(mounts.cache)
        shutil.rmtree(mounts.host, ignore_errors=True)
    finally:
        job_id_var.reset(token)
        _kick(tenant_id, queue)


def _replace_results(session, job_id: str, report: Report, out_dir: Path) -> Report:
    """Stores the run's artifacts and measurements; a retried job replaces whatever an earlier attempt stored."""
    session.execute(delete(Measurement).where(Measurement.job_id == job_id))
    for key in session.scalars(select(Artifact.blob_key).where(Artifact.job_id == job_id)).all():
        blob_refs.unpin(session, key)  # the collector removes bytes nothing else uses
    session.execute(delete(Artifact).where(Artifact.job_id == job_id))
    report = report.model_copy(update={"isolation": _isolation()})
    max_bytes = get_settings().sandbox_disk_mb * 2**20
    return store_results(session, session.get(Job, job_id), report, out_dir, max_bytes)


def _stored_partial(session, job_id: str, partial: Report | None, out_dir: Path) -> Report | None:
    """What a search found before the job was cancelled or stopped, stored with its artifacts."""
    if not partial:
        return None
    try:
        return _replace_results(session, job_id, partial, out_dir)
    except Exception:
        log.exception("storing the partial results failed")
        session.rollback()
        return None


def _conclude(job_id: str, worker: str, outcome: ChildOutcome, out_dir: Path, partial: Report | None = None) -> None:
    with session_factory()() as session:
        if outcome.stopped == StopReason.LOST:
            log.warning("job taken over or ended elsewhere; this worker's result is dropped")
            return
        if outcome.stopped == StopReason.CANCEL:
            results = _stored_partial(session, job_id, partial, out_dir)
            # a running job's results hold the search's progress: a cancelled one keeps only what was stored
            ended = finish(
                session,
                job_id,
                CANCELLED,
                worker=worker,
                stage="cancelled while running",
                results=results if results is not None else (PartialResults() if partial else None),
            )
        elif outcome.ok:
            try:
                results = _replace_results(session, job_id, outcome.report, out_dir)
            except UntrustedOutput as e:  # the job's own doing: its files are not what its report says
                log.warning("job output refused: %s", e)
                session.rollback()
                ended = finish(
                    session,
                    job_id,
                    FAILED,
                    worker=worker,
                    code=JobErrorCode.INVALID_OUTPUT,
                    message=f"the job's output was refused, nothing of it is stored: {e}",
                )
            except Exception as e:
                log.exception("storing results failed")
                session.rollback()
                ended = finish(
                    session,
                    job_id,
                    FAILED,
                    worker=worker,
                    code=JobErrorCode.INTERNAL,
                    message=f"the job ran but its results could not be stored: {e}",
                )
            else:
                ended = finish(session, job_id, SUCCEEDED, worker=worker, results=results)
        else:
            message = without_paths(outcome.message or "the job failed")[:2000]
            # what the failed run measured (a step's best candidate, the earlier steps), or what a search had
            # found when the job was stopped (time limit), is kept
            results = _stored_partial(session, job_id, outcome.report or partial, out_dir)
            ended = finish(
                session,
                job_id,
                FAILED,
                worker=worker,
                code=outcome.code or JobErrorCode.INTERNAL,
                message=message,
                results=results,
            )
            if outcome.log_tail:  # the child's own log says more than one message can (its paths taken out)
                add_event(session, job_id, EventKind.LOG, {"message": without_paths(outcome.log_tail[-2000:])})
                session.commit()
        log.info(
            "job ended: %s", "succeeded" if outcome.ok else (outcome.stopped or outcome.code), extra={"worker": worker}
        )
        if ended:
            drop_checkpoints(job_id)
        if ended and session.get(Job, job_id).callback_url:
            _send_webhook(job_id, 1)


def _send_webhook(job_id: str, attempt: int) -> None:
    if not webhooks.deliver(job_id, attempt) and attempt < get_settings().webhook_max_attempts:
        deliver_webhook.apply_async(args=[job_id, attempt + 1], countdown=webhooks.backoff_s(attempt))


@celery.task(name=WEBHOOK_TASK, acks_late=True)
def deliver_webhook(job_id: str, attempt: int) -> None:
    with session_scope() as session:
        from app.store.tables.jobs import WebhookDelivery

        if session.scalar(
            select(WebhookDelivery.id).where(WebhookDelivery.job_id == job_id, WebhookDelivery.delivered.is_(True))
        ):
            return  # delivered already (a redelivered message)
    _send_webhook(job_id, attempt)
