"""jobs: index on (tenant_id, started_at), for the dispatcher's "when did this tenant last start a job"

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 11:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_tenant_started", "jobs", ["tenant_id", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_tenant_started", table_name="jobs")
