"""Typed errors: each carries the server's error code and message (`{"error": {"code", "message"}}`)."""

from __future__ import annotations


class SqueezeError(Exception):
    status: int | None = None

    def __init__(self, message: str, *, code: str = "error", status: int | None = None):
        super().__init__(message)
        self.message, self.code = message, code
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code})"


class InvalidRequest(SqueezeError):  # 400, 422
    pass


class Unauthorized(SqueezeError):  # 401, 403
    pass


class NotFound(SqueezeError):  # 404
    pass


class Conflict(SqueezeError):  # 409
    pass


class TooLarge(SqueezeError):  # 413
    pass


class UnsupportedMedia(SqueezeError):  # 415
    pass


class RateLimited(SqueezeError):  # 429
    pass


class ServerError(SqueezeError):  # 5xx after the retries
    pass


class ConnectionFailed(SqueezeError):
    """The server could not be reached, after the retries."""


class ChecksumMismatch(SqueezeError):
    """A download's bytes do not hash to the artifact's sha256."""


class JobFailed(SqueezeError):
    """The job ended failed or cancelled; `job` holds it, with its error."""

    def __init__(self, job):
        error = job.data.get("error") or {}
        super().__init__(
            error.get("message") or f"job {job.id} ended {job.status}", code=error.get("code") or job.status
        )
        self.job = job


BY_STATUS = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: TooLarge,
    415: UnsupportedMedia,
    422: InvalidRequest,
    429: RateLimited,
}


def from_response(status: int, body) -> SqueezeError:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    cls = BY_STATUS.get(status, ServerError if status >= 500 else SqueezeError)
    return cls(error.get("message") or f"HTTP {status}", code=error.get("code") or f"http_{status}", status=status)
