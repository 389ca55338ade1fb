"""Request dependencies: a database session and the caller's tenant."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from app.store.db import session_factory
from workers.compression.contract.vocabulary import ApiErrorCode

from .auth.service import Caller, authenticate, cached_caller
from .errors import ApiError, not_found
from .ratelimit import limiter, tenant_slots
from .store.config import get_settings

ID = re.compile(r"[a-z]+_[0-9a-f]{1,40}")  # what store.db.new_id makes


def get_owned(session: Session, table, tenant: Caller, row_id: str, kind: str):
    """A row of this tenant, or 404 as if any other tenant's row did not exist (or no id could look like it:
    a NUL byte or a megabyte never reaches the database)."""
    row = session.get(table, row_id) if ID.fullmatch(row_id) else None
    if row is None or row.tenant_id != tenant.id:
        raise not_found(kind, row_id)
    return row


def get_session() -> Iterator[Session]:
    with session_factory()() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# the web page signs in once and keeps the key in an HttpOnly cookie (JavaScript never sees it); a
# second, readable cookie holds a CSRF token that the page echoes in a header on every write
KEY_COOKIE = "squeeze_key"
CSRF_COOKIE = "squeeze_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def auth_failure(request: Request) -> int:
    """Counts a failed authentication against the caller's address; the seconds to wait when over the limit."""
    address = request.client.host if request.client else "unknown"
    return limiter("auth_failures", get_settings().auth_failures_per_minute).take(address)


def _too_many(wait: int, what: str) -> ApiError:
    return ApiError(429, ApiErrorCode.RATE_LIMITED, f"{what}; retry in {wait} s", {"Retry-After": str(wait)})


async def current_tenant(request: Request) -> Caller:
    """Async, with no session of its own: a key seen in the last seconds is answered from the cache in the
    event loop (a poll costs no thread hop for it); only an unknown key is looked up, in the thread pool."""
    settings = get_settings()
    try:
        tenant = await _authenticate(request)
    except ApiError:
        # a failure spends one of the address's tokens (atomically: parallel guesses cannot all pass);
        # past the limit failures are 429. A valid key always passes, so clients sharing an address
        # (a NAT, an ingress) are not locked out by one bad neighbour; keys are 256-bit, so the limit
        # is about load and log noise, not about the odds of a guess
        if wait := auth_failure(request):
            raise _too_many(wait, "too many requests with a missing or wrong API key from this address") from None
        raise
    if wait := limiter("requests", settings.requests_per_minute_per_key).take(tenant.id):
        raise _too_many(wait, f"more than {settings.requests_per_minute_per_key} requests a minute with this key")
    request.state.tenant_id = tenant.id
    return tenant


def _look_up(key: str) -> Caller | None:
    with session_factory()() as session:
        return authenticate(session, key)


async def _authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header and (cookie := request.cookies.get(KEY_COOKIE)):
        _check_csrf(request)
        scheme, key = "bearer", cookie
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401, ApiErrorCode.UNAUTHORIZED, "send your API key as 'Authorization: Bearer <key>'", {"WWW-Authenticate": "Bearer"}
        )
    tenant = cached_caller(key.strip()) or await run_in_threadpool(_look_up, key.strip())
    if tenant is None:
        raise ApiError(
            401, ApiErrorCode.UNAUTHORIZED, "this API key is not valid (unknown or revoked)", {"WWW-Authenticate": "Bearer"}
        )
    return tenant


def _check_csrf(request: Request) -> None:
    """A write authenticated by the cookie must carry the CSRF cookie's value in a header, which only
    a page of this origin can read."""
    if request.method in SAFE_METHODS:
        return
    token = request.cookies.get(CSRF_COOKIE, "")
    if not token or not secrets.compare_digest(token, request.headers.get(CSRF_HEADER, "")):
        raise ApiError(403, ApiErrorCode.CSRF_FAILED, "this request came without the page's CSRF token; reload the page")


TenantDep = Annotated[Caller, Depends(current_tenant)]


def take_slot(what: str, limit: int, tenant_id: str) -> Callable[[], None]:
    """One of the tenant's `limit` places for a long request (an upload streaming in, an event stream), or
    429 at once; returns the release, to be called when the request ends."""
    slots = tenant_slots(what, limit)
    if not slots.acquire(tenant_id):
        raise ApiError(
            429,
            ApiErrorCode.BUSY,
            f"you have {limit} {what} open at once (the limit); retry when one has finished",
            {"Retry-After": "5"},
        )
    return lambda: slots.release(tenant_id)
