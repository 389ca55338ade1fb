"""blobs: reference counts for content-addressed blobs, filled from the rows that use them

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("refs", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_blobs_updated_at"), "blobs", ["updated_at"], unique=False)
    # every blob already stored, counted from the rows that use it
    op.execute(
        "INSERT INTO blobs (key, refs, updated_at) "
        "SELECT blob_key, COUNT(*), CURRENT_TIMESTAMP FROM ("
        "SELECT blob_key FROM models UNION ALL SELECT blob_key FROM datasets UNION ALL SELECT blob_key FROM artifacts"
        ") AS used GROUP BY blob_key"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_blobs_updated_at"), table_name="blobs")
    op.drop_table("blobs")
