"""Submitting and cancelling jobs (the API side). Everything that can be checked is checked here, so
a bad recipe is a 422 now, not a failed job later."""

from __future__ import annotations

import hashlib
import json

from sqlalchemy import delete as delete_rows
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store import blob_refs
from app.store.blobs import BlobStore
from app.store.callback_urls import url_problem
from app.store.config import get_settings
from app.store.db import new_id, utcnow
from app.store.job_state import add_event, finish, status_event
from app.store.tables.artifacts import Artifact, Measurement
from app.store.tables.datasets import Dataset
from app.store.tables.jobs import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL, Job, JobEvent, WebhookDelivery
from app.store.tables.models import Model
from app.store.tables.uploads import INVALID, PENDING
from app.store.usage import storage_of
from workers.compression.contract.errors import RecipeError
from workers.compression.contract.formats import ModelFormat
from workers.compression.contract.inspection import DatasetInfo, ModelInfo
from workers.compression.contract.recipe import METHODS, check_recipe, parse_recipe
from workers.compression.contract.vocabulary import ApiErrorCode, EventKind
from workers.compression.contract.vocabulary import Queue as QueueName

from ..auth.service import Caller
from ..dependencies import get_owned
from ..errors import ApiError
from ..queue import enqueue_job, queue_for
from .schemas import JobIn

NOT_READY = {"model": ApiErrorCode.MODEL_NOT_READY, "dataset": ApiErrorCode.DATASET_NOT_READY}
INVALID_UPLOAD = {"model": ApiErrorCode.MODEL_INVALID, "dataset": ApiErrorCode.DATASET_INVALID}


def _check_ready(row, kind: str) -> None:
    if row.status == PENDING:
        raise ApiError(
            409,
            NOT_READY[kind],
            f"{kind} {row.id} is still being inspected; submit again when its status is 'ready'",
        )
    if row.status == INVALID:
        raise ApiError(422, INVALID_UPLOAD[kind], f"{kind} {row.id} is invalid: {row.error_message}")


def _check_references(session: Session, tenant: Caller, recipe, model: Model) -> None:
    """Other models a step names (a distillation student): the tenant's own, ready, and compatible."""
    for i, step in enumerate(recipe.steps, start=1):
        method = METHODS[step.method]
        for ref in method.references(step):
            other = get_owned(session, Model, tenant, ref, "model")
            _check_ready(other, "model")
            if reason := method.check_reference(step, _model_info(model), _model_info(other)):
                raise ApiError(422, ApiErrorCode.INVALID_RECIPE, f"step {i} ({step.method}): {reason}")


def _model_info(row: Model) -> ModelInfo:
    return ModelInfo.model_validate(row.info)  # written validated by the worker (a ready model has it)


def _request_hash(body: JobIn) -> str:
    request = {**body.model_dump(mode="json", exclude={"recipe"}), "recipe": body.recipe}
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def _existing(session: Session, tenant: Caller, key: str, digest: str) -> Job | None:
    job = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == key))
    if job is not None and job.request_hash != digest:
        raise ApiError(
            409,
            ApiErrorCode.IDEMPOTENCY_CONFLICT,
            f"Idempotency-Key {key!r} was already used for a different request (job {job.id})",
        )
    return job


def _check_budget(recipe) -> None:
    """A search budget the job's time limit would cut short is refused now, not killed later."""
    limit_s = get_settings().job_time_limit_s
    for step in recipe.steps:
        budget = getattr(step, "budget_minutes", None)
        if budget is not None and budget * 60 > 0.9 * limit_s:
            raise ApiError(
                422,
                ApiErrorCode.INVALID_RECIPE,
                f"budget_minutes {budget:g} does not fit this service's job time limit of {limit_s / 60:.0f} "
                f"minutes (the search needs time to load data and store results too); use at most "
                f"{0.9 * limit_s / 60:.0f}",
            )


def submit(session: Session, tenant: Caller, body: JobIn, idempotency_key: str | None) -> tuple[Job, bool]:
    """Returns (job, created). A repeated Idempotency-Key with the same body returns the first job."""
    digest = _request_hash(body)
    if idempotency_key and (job := _existing(session, tenant, idempotency_key, digest)):
        return job, False
    if body.callback_url and (problem := url_problem(str(body.callback_url), get_settings().webhook_allow_private)):
        raise ApiError(422, ApiErrorCode.INVALID_CALLBACK_URL, problem)
    model = get_owned(session, Model, tenant, body.model_id, "model")
    _check_ready(model, "model")
    datasets = {}
    for dataset_id in {body.dataset_id, body.eval_dataset_id} - {None}:
        datasets[dataset_id] = get_owned(session, Dataset, tenant, dataset_id, "dataset")
        _check_ready(datasets[dataset_id], "dataset")
    data_info = DatasetInfo.model_validate(datasets[body.dataset_id].info) if body.dataset_id else None
    try:
        recipe = parse_recipe(body.recipe)  # the one place a submitted recipe is parsed; typed from here on
        check_recipe(
            recipe,
            ModelFormat(model.format),
            model_info=_model_info(model),
            has_data=body.dataset_id is not None,
            has_labels=data_info.labels if data_info is not None else None,
            data_info=data_info,
        )
    except RecipeError as e:
        raise ApiError(422, e.code, e.message) from None
    _check_budget(recipe)
    _check_references(session, tenant, recipe, model)
    if storage_of(session, tenant.id).total >= (quota := get_settings().storage_quota_bytes_per_tenant):
        raise ApiError(
            429,
            ApiErrorCode.QUOTA_EXCEEDED,
            f"your storage is at its quota of {quota / 2**20:.0f} MiB; a job would add artifacts: delete models, "
            "datasets or finished jobs first (GET /v1/usage)",
        )
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant.id, Job.status.in_((QUEUED, RUNNING)))
    )
    limit = get_settings().max_active_jobs_per_tenant
    if active >= limit:
        raise ApiError(
            429,
            ApiErrorCode.TOO_MANY_JOBS,
            f"{active} jobs are queued or running (limit {limit}); wait for some to finish",
            {"Retry-After": "30"},
        )
    queue = queue_for(body.device)
    job = Job(
        id=new_id("job"),
        tenant_id=tenant.id,
        name=body.name,
        model_id=model.id,
        dataset_id=body.dataset_id,
        eval_dataset_id=body.eval_dataset_id,
        recipe=recipe.model_dump(mode="json"),
        device=body.device,
        queue=queue,
        status=QUEUED,
        progress=0.0,
        stage="waiting for a GPU worker" if queue == QueueName.GPU else "waiting for a worker",
        idempotency_key=idempotency_key,
        request_hash=digest,
        callback_url=str(body.callback_url) if body.callback_url else None,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same Idempotency-Key won the race
        session.rollback()
        return _existing(session, tenant, idempotency_key, digest), False
    add_event(session, job.id, EventKind.STATUS, status_event(job))
    session.commit()
    try:
        enqueue_job(job.id, queue)
    except ApiError as e:
        finish(session, job.id, FAILED, code=e.code, message=e.message)
        raise
    return job, True


def cancel(session: Session, job: Job) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop and its worker ends it."""
    if job.status in TERMINAL:
        raise ApiError(409, ApiErrorCode.ALREADY_FINISHED, f"job {job.id} already ended with status {job.status!r}")
    if job.status == QUEUED and finish(session, job.id, CANCELLED, stage="cancelled before it started"):
        session.refresh(job)
        return job
    job.cancel_requested = True
    job.updated_at = utcnow()
    add_event(session, job.id, EventKind.LOG, {"message": "cancellation requested"})
    session.commit()
    return job


def delete(session: Session, job: Job, store: BlobStore) -> None:
    """A finished job and all it holds (artifacts, measurements, events): its artifacts' references go in the
    same transaction, their bytes only when nothing else refers to them (content-addressed)."""
    if job.status not in TERMINAL:
        raise ApiError(409, ApiErrorCode.CONFLICT, f"job {job.id} is {job.status}: cancel it first, then delete it")
    keys = list(session.scalars(select(Artifact.blob_key).where(Artifact.job_id == job.id)))
    session.execute(delete_rows(Measurement).where(Measurement.job_id == job.id))
    session.execute(delete_rows(Artifact).where(Artifact.job_id == job.id))
    session.execute(delete_rows(JobEvent).where(JobEvent.job_id == job.id))
    session.execute(delete_rows(WebhookDelivery).where(WebhookDelivery.job_id == job.id))
    for key in keys:
        blob_refs.unpin(session, key)
    session.delete(job)
    session.commit()
    blob_refs.collect(session, store, keys)
