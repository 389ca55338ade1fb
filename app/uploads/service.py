"""What models and datasets share: sniff the received bytes, store them once, record the upload,
and hand it to a worker for inspection. Nothing here deserializes the file."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.store import blob_refs
from app.store.blobs import BlobStore, key_for
from app.store.config import get_settings
from app.store.db import new_id
from app.store.locks import lock_tenant
from app.store.tables.datasets import Dataset
from app.store.tables.models import Model
from app.store.tables.uploads import INVALID, PENDING
from app.store.usage import storage_of
from workers.compression.contract.errors import UnsupportedFormatError
from workers.compression.contract.vocabulary import ApiErrorCode

from ..errors import ApiError
from .stream import ReceivedUpload

# why the bytes were refused -> HTTP status: unsupported kinds are 415, broken files 400
SNIFF_STATUS = {
    ApiErrorCode.PICKLE_REFUSED: 415,
    ApiErrorCode.UNSUPPORTED_FORMAT: 415,
    ApiErrorCode.EMPTY_FILE: 400,
    ApiErrorCode.CORRUPT_ARCHIVE: 400,
}


def check_pending_inspections(session: Session, tenant_id: str) -> None:
    """A tenant with this many uploads still waiting for inspection waits (429), so that one tenant's burst
    of uploads cannot fill the workers' queue ahead of the others. Checked before a byte of the upload is
    read (cheap, so a refused upload costs nothing), and again under the tenant's lock in the transaction that
    records it (`record_upload`; exact: N uploads streamed at once all passed the first check)."""
    pending = sum(
        session.scalar(select(func.count()).select_from(t).where(t.tenant_id == tenant_id, t.status == PENDING))
        for t in (Model, Dataset)
    )
    limit = get_settings().max_pending_inspections_per_tenant
    if pending >= limit:
        raise ApiError(
            429,
            ApiErrorCode.TOO_MANY_PENDING_UPLOADS,
            f"{pending} of your uploads are still being inspected (limit {limit}); upload more when they are ready",
            {"Retry-After": "10"},
        )


def request_size(request: Request) -> int:
    """The body's declared size (Content-Length), or 0 when it is streamed without one."""
    declared = request.headers.get("content-length", "")
    return int(declared) if declared.isdigit() else 0


def check_quota(session: Session, tenant_id: str, incoming: int) -> None:
    """413 `quota_exceeded` when `incoming` more bytes would take the tenant past its storage quota. Checked
    from the declared size before a byte is read, and again with the real size when the upload is recorded."""
    quota = get_settings().storage_quota_bytes_per_tenant
    used = storage_of(session, tenant_id).total
    if used + incoming > quota:
        raise ApiError(
            413,
            ApiErrorCode.QUOTA_EXCEEDED,
            f"your storage would hold {(used + incoming) / 2**20:.1f} MiB, over your quota of {quota / 2**20:.0f} MiB; "
            "delete models, datasets or jobs you no longer need (GET /v1/usage shows what is kept)",
        )


def sniff(received: ReceivedUpload, detect: Callable) -> str:
    """Runs a torch-free detector on the temporary file; refusals delete it."""
    try:
        return str(detect(received.temp))
    except UnsupportedFormatError as e:
        received.temp.unlink(missing_ok=True)
        raise ApiError(SNIFF_STATUS.get(e.code, 415), e.code, e.message) from None


def record_upload(
    session: Session,
    table,
    tenant_id: str,
    received: ReceivedUpload,
    fmt: str,
    store: BlobStore,
    prefix: str,
    name: str | None,
    **extra,
) -> object:
    key = key_for(received.sha256)
    lock_tenant(session, tenant_id)  # first, before the blob's row (store/locks.py)
    # pinned before the bytes are written, in the transaction that records the row (blob_refs.py); the pin is
    # this transaction's first write, so on SQLite the count below is read under the write lock
    blob_refs.pin(session, key)
    try:
        check_pending_inspections(session, tenant_id)
        check_quota(session, tenant_id, received.size)
    except ApiError:
        session.rollback()
        received.temp.unlink(missing_ok=True)
        raise
    try:
        store.commit(received.temp, received.sha256)
    except BaseException:
        session.rollback()
        raise
    row = table(
        id=new_id(prefix),
        tenant_id=tenant_id,
        name=name or received.filename or received.sha256[:12],
        format=fmt,
        sha256=received.sha256,
        size_bytes=received.size,
        blob_key=key,
        **extra,
    )
    session.add(row)
    session.commit()
    return row


def mark_unqueued(session: Session, row, error: Exception) -> ApiError:
    row.status, row.error_code = INVALID, ApiErrorCode.QUEUE_UNAVAILABLE
    row.error_message = f"the upload was stored but could not be queued for inspection: {error}"
    session.commit()
    return ApiError(503, ApiErrorCode.QUEUE_UNAVAILABLE, "the job queue is unreachable; try again shortly")


def delete_upload(session: Session, row, store: BlobStore) -> None:
    """The row and its reference go in one transaction; the bytes only if nothing else refers to them
    (content-addressed: another tenant's identical upload, or one arriving now, shares them)."""
    key = row.blob_key
    session.delete(row)
    blob_refs.unpin(session, key)
    session.commit()
    blob_refs.collect(session, store, [key])
