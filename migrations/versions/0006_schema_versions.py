"""jobs.recipe and jobs.results carry `schema_version` (1); models.info and datasets.info carry `kind`

Stored JSON is read back typed (the contract's Recipe, Report, ModelInfo, DatasetInfo) without a fallback
to plain dicts, so every row is brought to the current shape here, once. Self-contained on purpose: a
migration must mean the same thing when the code it was written beside has moved on.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 20:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSION = 1


def _rewrite(table: str, column: str, change: Callable[[dict], dict | None]) -> None:
    bind = op.get_bind()
    t = sa.table(table, sa.column("id", sa.String), sa.column(column, sa.JSON))
    for row_id, value in bind.execute(sa.select(t.c.id, t.c[column])).all():
        if isinstance(value, dict) and (new := change(dict(value))) is not None:
            bind.execute(sa.update(t).where(t.c.id == row_id).values({column: new}))


def _versioned(value: dict) -> dict | None:
    return None if "schema_version" in value else {"schema_version": VERSION, **value}


def _unversioned(value: dict) -> dict:
    value.pop("schema_version", None)
    return value


def upgrade() -> None:
    _rewrite("jobs", "recipe", _versioned)
    # a report, a search's front so far, or `{}` (a cancelled search that had stored nothing)
    _rewrite("jobs", "results", _versioned)
    for table, kind in (("models", "model"), ("datasets", "dataset")):
        _rewrite(table, "info", lambda info, kind=kind: None if "kind" in info else {"kind": kind, **info})


def downgrade() -> None:
    _rewrite("jobs", "recipe", _unversioned)
    _rewrite("jobs", "results", _unversioned)
    for table in ("models", "datasets"):
        _rewrite(table, "info", lambda info: {k: v for k, v in info.items() if k != "kind"})
