"""Every error the API returns has one shape: `{"error": {"code", "message"}}` with the right status.
Bad input is never a 500; an unexpected failure is a 500 with a code, logged with its traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from workers.compression.contract.vocabulary import ApiErrorCode, JobErrorCode

log = logging.getLogger("squeeze.api")

STATUS_CODES = {
    400: ApiErrorCode.BAD_REQUEST,
    401: ApiErrorCode.UNAUTHORIZED,
    404: ApiErrorCode.NOT_FOUND,
    405: ApiErrorCode.METHOD_NOT_ALLOWED,
    409: ApiErrorCode.CONFLICT,
    413: ApiErrorCode.TOO_LARGE,
    415: ApiErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ApiErrorCode.INVALID_REQUEST,
    429: ApiErrorCode.TOO_MANY_REQUESTS,
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: ApiErrorCode | JobErrorCode, message: str, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def not_found(kind: str, id: str) -> ApiError:
    return ApiError(404, ApiErrorCode.NOT_FOUND, f"no {kind} with id {id!r}")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def describe_validation(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path: Starlette's own 405 names only the first route that
    matched the path (GET /v1/models/{id} and DELETE /v1/models/{id} are two routes)."""
    return sorted(_methods(request.app.router.routes, request.url.path))


def _methods(routes, path: str) -> set[str]:
    found: set[str] = set()
    for route in routes:
        inner = getattr(route, "original_router", None)  # an included router (FastAPI): its own routes
        if inner is not None:
            prefix = getattr(getattr(route, "include_context", None), "prefix", "") or ""
            if path.startswith(prefix):
                found |= _methods(inner.routes, path[len(prefix) :] or "/")
        elif (regex := getattr(route, "path_regex", None)) is not None and regex.match(path):
            found |= set(getattr(route, "methods", None) or ())
    return found


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, ApiErrorCode.MALFORMED_JSON, "the request body is not valid JSON")
        return error_response(422, ApiErrorCode.INVALID_REQUEST, describe_validation(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        fallback = ApiErrorCode.INTERNAL if exc.status_code >= 500 else ApiErrorCode.BAD_REQUEST
        code = STATUS_CODES.get(exc.status_code, fallback)
        message = exc.detail if isinstance(exc.detail, str) else code
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            message = f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return error_response(exc.status_code, code, message, headers)

    @app.exception_handler(SQLAlchemyTimeoutError)
    async def _pool_full(request: Request, exc: SQLAlchemyTimeoutError) -> JSONResponse:
        # every database connection of this process is in use: others' requests are answered, never a 500
        log.warning("database pool exhausted on %s %s", request.method, request.url.path)
        return error_response(
            503, ApiErrorCode.BUSY, "the service is busy; retry in a few seconds", {"Retry-After": "2"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, ApiErrorCode.INTERNAL, "an unexpected error occurred; it has been logged")
