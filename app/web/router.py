"""The web page: one HTML page with its script and styles (served by the app, nothing from a CDN), and
the sign-in that turns an API key into an HttpOnly cookie. Everything else the page does goes through
the public /v1 API."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from workers.compression.contract.vocabulary import ApiErrorCode

from ..auth.service import authenticate
from ..dependencies import CSRF_COOKIE, KEY_COOKIE, SessionDep, TenantDep, auth_failure
from ..errors import ApiError

STATIC = Path(__file__).parent / "static"
SESSION_DAYS = 7

router = APIRouter(include_in_schema=False)

SECURITY_HEADERS = {
    # the page loads only its own script and styles; no inline script, no framing by other sites
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@router.get("/")
def page() -> FileResponse:
    # no-cache: a new release is picked up on the next load; the files are small
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


STATIC_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


@router.get("/ui/static/{name}")
def static(name: str) -> FileResponse:
    # a name is checked before it is a path: a NUL byte, a slash or `..` is a 404 like any unknown file
    path = (STATIC / name).resolve() if STATIC_NAME.fullmatch(name) else None
    if path is None or path.parent != STATIC.resolve() or not path.is_file():
        raise ApiError(404, ApiErrorCode.NOT_FOUND, f"no file {name!r}")
    return FileResponse(path, headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


@router.post("/ui/session")
def sign_in(request: Request, session: SessionDep, api_key: Annotated[str, Form()] = "") -> Response:
    """The sign-in form posts here; a wrong key comes back to the page with an error flag."""
    origin = request.headers.get("origin")
    if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
        # another site posting this form would sign the browser in with its own key (login CSRF)
        raise ApiError(403, ApiErrorCode.CSRF_FAILED, "sign in from the Squeeze page itself")
    tenant = authenticate(session, api_key.strip()) if api_key.strip() else None
    if tenant is None:
        if wait := auth_failure(request):
            raise ApiError(
                429,
                ApiErrorCode.RATE_LIMITED,
                f"too many failed sign-ins from this address; retry in {wait} s",
                {"Retry-After": str(wait)},
            )
        return RedirectResponse("/?signin=failed", status_code=303)
    response = RedirectResponse("/", status_code=303)
    secure = request.url.scheme == "https"
    age = SESSION_DAYS * 86400
    response.set_cookie(
        KEY_COOKIE, api_key.strip(), max_age=age, httponly=True, samesite="strict", secure=secure, path="/"
    )
    response.set_cookie(
        CSRF_COOKIE, secrets.token_urlsafe(24), max_age=age, httponly=False, samesite="strict", secure=secure, path="/"
    )
    return response


@router.get("/ui/session")
def whoami(request: Request, session: SessionDep) -> dict:
    """Who the page is signed in as; `tenant` null when it is not (a normal state, not an error)."""
    key = request.cookies.get(KEY_COOKIE)
    tenant = authenticate(session, key) if key else None
    if key and tenant is None and (wait := auth_failure(request)):  # a cookie is a key too: same limit
        raise ApiError(
            429, ApiErrorCode.RATE_LIMITED, f"too many wrong keys from this address; retry in {wait} s", {"Retry-After": str(wait)}
        )
    return {"tenant": tenant.name if tenant else None}


@router.post("/ui/session/delete")
def sign_out(tenant: TenantDep) -> Response:
    """Signing out is a write: it needs the CSRF header like any other (so another site cannot force it)."""
    response = Response(status_code=204)
    response.delete_cookie(KEY_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response
