"""An upload's inspection, as a job's run is: a worker takes it with one conditional UPDATE and beats while
it inspects, so a worker killed mid-inspection is noticed within the heartbeat timeout (not the inspection
time limit) and another inspects the upload again. Inspection is idempotent: the first result wins."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from .db import utcnow
from .tables.datasets import Dataset
from .tables.models import Model
from .tables.uploads import PENDING

UPLOAD_TABLES = {"model": Model, "dataset": Dataset}


def start_inspection(session: Session, table, upload_id: str, stale_before: datetime) -> bool:
    """True when this worker may inspect the upload now: it is pending and nobody beats for it (a
    redelivered message while another worker inspects it finds a fresh beat, and leaves it)."""
    taken = session.execute(
        update(table)
        .where(
            table.id == upload_id,
            table.status == PENDING,
            or_(table.inspect_heartbeat_at.is_(None), table.inspect_heartbeat_at < stale_before),
        )
        .values(inspect_heartbeat_at=utcnow())
    ).rowcount
    session.commit()
    return taken == 1


def beat_inspection(session: Session, table, upload_id: str) -> None:
    session.execute(
        update(table).where(table.id == upload_id, table.status == PENDING).values(inspect_heartbeat_at=utcnow())
    )
    session.commit()


def lost_inspections(session: Session, stale_before: datetime) -> list[tuple[str, str]]:
    """Pending uploads whose inspecting worker stopped beating: (kind, id), each released (its beat cleared,
    one conditional UPDATE) so the caller sends it again once, however many sweepers look."""
    lost = []
    for kind, table in UPLOAD_TABLES.items():
        stale = table.status == PENDING, table.inspect_heartbeat_at < stale_before
        for upload_id in session.scalars(select(table.id).where(*stale)).all():
            released = session.execute(
                update(table).where(table.id == upload_id, *stale).values(inspect_heartbeat_at=None)
            ).rowcount
            session.commit()
            if released == 1:
                lost.append((kind, upload_id))
    return lost
