"""artifacts.runtime: what the job measured each artifact on (shown with how to run it)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 22:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("runtime", sa.String(32), nullable=True))
    # the runtime the stored measurement of each artifact names
    op.execute(
        "UPDATE artifacts SET runtime = (SELECT m.runtime FROM measurements m "
        "WHERE m.artifact_id = artifacts.id AND m.role = 'step' LIMIT 1)"
    )


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("runtime")
