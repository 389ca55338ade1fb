"""Request dependencies: a database session and the caller's tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from .auth.service import authenticate
from .auth.tables import Tenant
from .db import session_factory
from .errors import ApiError, not_found


def get_owned(session: Session, table, tenant: Tenant, row_id: str, kind: str):
    """A row of this tenant, or 404 as if any other tenant's row did not exist."""
    row = session.get(table, row_id)
    if row is None or row.tenant_id != tenant.id:
        raise not_found(kind, row_id)
    return row


def get_session() -> Iterator[Session]:
    with session_factory()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def current_tenant(request: Request, session: SessionDep) -> Tenant:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, "unauthorized", "send your API key as 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )
    tenant = authenticate(session, key.strip())
    if tenant is None:
        raise ApiError(
            401, "unauthorized", "this API key is not valid (unknown or revoked)", {"WWW-Authenticate": "Bearer"}
        )
    request.state.tenant_id = tenant.id
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
