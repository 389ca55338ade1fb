"""Per-tenant serialisation for the check-then-write steps that enforce a per-tenant limit (running jobs,
pending inspections): without it, N workers or N uploads checking at the same instant all see room and all
write, and the tenant ends N−1 over its limit."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .tables.auth import Tenant


def lock_tenant(session: Session, tenant_id: str) -> None:
    """Holds the tenant's row until this transaction ends. PostgreSQL: SELECT … FOR NO KEY UPDATE, so a second
    transaction for the same tenant waits here and then reads what the first committed (READ COMMITTED reads
    each statement afresh); NO KEY, so it does not block the key-share locks that inserting rows which refer
    to the tenant take (a job's artifacts being stored). Take it before any other row lock in the transaction
    (blob pins), so locks are always taken tenant first. SQLite: nothing is emitted; writers are serialised by
    the database's write lock, so callers read their count after (or inside) the transaction's first write."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True))
