"""What the OpenAPI schema says beside each route's success: every error answer a route can give, in the
one error shape, so that a generated client and a schema checker (schemathesis, all checks) find the
schema telling the truth. Routers name their answers with `errors(...)`; the shared ones (a key, the rate
limit, a malformed request) come with every authenticated route."""

from __future__ import annotations

from typing import Any

from .schemas import ErrorResponse

WHY = {
    400: "malformed request: bad JSON (malformed_json), an empty or broken upload (empty_file, corrupt_archive, "
    "missing_file, upload_interrupted)",
    401: "no API key, or not a valid one (unauthorized)",
    403: "a write signed in by the page's cookie without its CSRF token (csrf_failed)",
    404: "no such id for this key (not_found): another tenant's ids are not found either",
    409: "the state does not allow it (model_not_ready, in_use, already_finished, idempotency_conflict)",
    410: "the file is gone from the blob store (gone)",
    413: "over the upload or body size limit, or the tenant's storage quota (too_large, quota_exceeded)",
    415: "a format that is not accepted, or a pickle (unsupported_format, pickle_refused, unsupported_media_type)",
    422: "a field, recipe or callback URL that cannot be used (invalid_request, invalid_recipe, ...)",
    429: "too many requests, jobs, uploads or streams at once (rate_limited, too_many_jobs, busy, ...): "
    "see Retry-After",
    503: "a shared resource is unavailable or full (queue_unavailable, busy): see Retry-After",
}

# what every route behind the API key can answer, whatever it does
AUTHENTICATED = (401, 422, 429, 503)


def errors(*statuses: int, authenticated: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the given error statuses (and the shared ones of an authenticated route),
    each with the error body."""
    wanted = sorted({*statuses, *(AUTHENTICATED if authenticated else ())})
    return {status: {"model": ErrorResponse, "description": WHY[status]} for status in wanted}


def json_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose success is not JSON (/metrics): its errors still are."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    return {status: {"description": WHY[status], "content": body} for status in sorted(statuses)}


WRITE = (403,)  # cookie-authenticated writes need the CSRF token

UPLOAD_RESPONSES = {
    "upload": errors(400, 409, 413, 415, *WRITE),
    "list": errors(),
    "read": errors(404),
    "delete": errors(404, 409, *WRITE),
}
