"""Structured logs: one JSON object per line, with the job id (and request id) of the context."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("job_id", job_id_var), ("request_id", request_id_var)):
            value = getattr(record, key, None) or var.get()
            if value:
                out[key] = value
        for key in ("method", "path", "status", "duration_ms", "tenant_id", "worker"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):  # our middleware logs each request once, as JSON
        logging.getLogger(noisy).disabled = True
    for name in ("uvicorn", "uvicorn.error", "celery"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
