"""jobs.event_bytes: the size of a job's events, capped per job and counted in its tenant's storage

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("event_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    # what the jobs already wrote (the JSON's length, as add_event counts it from now on)
    op.execute(
        "UPDATE jobs SET event_bytes = (SELECT COALESCE(SUM(LENGTH(CAST(data AS TEXT))), 0) "
        "FROM job_events WHERE job_events.job_id = jobs.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("event_bytes")
