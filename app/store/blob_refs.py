"""Reference counts for content-addressed blobs, so that deleting one row can never remove bytes another
row (another tenant's identical upload, an artifact) still needs.

The order that makes it safe, on SQLite and PostgreSQL alike:
- a writer **pins** the key (refs + 1, an upsert) in its transaction *before* it writes the bytes, and
  inserts its row in the same transaction;
- a delete removes its row and **unpins** (refs - 1, a conditional UPDATE) in one transaction;
- only the **collector** removes bytes: in one transaction it deletes the `blobs` row *where refs = 0*,
  removes the bytes, then commits. The deleted row stays locked until that commit, so a writer's pin of the
  same key waits for it and then inserts a fresh row and writes the bytes again; and a pin that came first
  makes refs > 0, so the conditional delete matches nothing.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .blobs import BlobStore
from .db import utcnow
from .tables.blobs import Blob

log = logging.getLogger("squeeze.blobs")
RECONCILE_AFTER_S = 3600  # a count left wrong by a crash between pin and row is recounted after this long


def pin(session: Session, key: str) -> None:
    """refs + 1 for `key` in the caller's transaction (flushed now, so the row lock is taken before the bytes
    are written); the caller inserts its row and commits."""
    dialect = session.get_bind().dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert
    statement = insert(Blob).values(key=key, refs=1, updated_at=utcnow())
    statement = statement.on_conflict_do_update(
        index_elements=[Blob.key], set_={"refs": Blob.refs + 1, "updated_at": utcnow()}
    )
    session.execute(statement)


def unpin(session: Session, key: str) -> None:
    """refs - 1 in the caller's transaction (never below zero); the bytes stay until `collect`."""
    session.execute(
        update(Blob).where(Blob.key == key, Blob.refs > 0).values(refs=Blob.refs - 1, updated_at=utcnow())
    )


def collect(session: Session, store: BlobStore, keys: list[str] | None = None) -> list[str]:
    """Removes the bytes of every blob nothing refers to (of `keys`, or all); returns the keys removed."""
    query = select(Blob.key).where(Blob.refs <= 0)
    if keys is not None:
        query = query.where(Blob.key.in_(keys))
    removed = []
    for key in session.scalars(query).all():
        session.rollback()  # one short transaction per blob
        gone = session.execute(delete(Blob).where(Blob.key == key, Blob.refs <= 0)).rowcount
        if not gone:  # pinned again meanwhile
            session.rollback()
            continue
        try:
            store.delete(key)  # while the row's deletion is uncommitted: a concurrent pin waits for us
        except Exception:
            session.rollback()  # the row comes back; the next sweep tries again
            log.exception("removing blob %s failed", key)
            continue
        session.commit()
        removed.append(key)
    session.rollback()
    return removed


def reconcile(session: Session) -> int:
    """Recounts blobs whose count has not changed for an hour: a writer that crashed after its pin and before
    its row (or rows deleted by a tenant's cascade) leave counts the rows do not back. Returns how many."""
    from .tables.artifacts import Artifact
    from .tables.datasets import Dataset
    from .tables.models import Model

    cutoff = utcnow() - timedelta(seconds=RECONCILE_AFTER_S)
    fixed = 0
    for blob in session.scalars(select(Blob).where(Blob.updated_at < cutoff)).all():
        actual = sum(
            session.scalar(select(func.count()).select_from(t).where(t.blob_key == blob.key))
            for t in (Model, Dataset, Artifact)
        )
        if actual != blob.refs:
            # conditional on the count read, so a pin or unpin since then wins
            fixed += session.execute(
                update(Blob).where(Blob.key == blob.key, Blob.refs == blob.refs).values(refs=actual)
            ).rowcount
    session.commit()
    return fixed
