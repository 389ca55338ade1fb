"""The FastAPI application: routers per domain, one error shape, JSON logs, metrics, the sweeper.

    uvicorn app.main:app        (after `alembic upgrade head`)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

from .artifacts.router import router as artifacts_router
from .auth.service import ensure_bootstrap_key
from .catalog.router import router as methods_router
from .config import get_settings
from .datasets.router import router as datasets_router
from .db import session_scope
from .errors import error_response, install_error_handlers
from .jobs.router import router as jobs_router
from .logs import configure_logging, request_id_var
from .models.router import router as models_router
from .ops.metrics import REQUEST_LATENCY
from .ops.router import router as ops_router
from .sweeper import sweep_forever

log = logging.getLogger("squeeze.api")


def bootstrap() -> None:
    """First start under plain uvicorn (app.serve does this before printing the URL)."""
    settings = get_settings()
    settings.ensure_dirs()
    with session_scope() as session:
        key = ensure_bootstrap_key(session, settings.bootstrap_api_key)
    if key and not settings.bootstrap_api_key:
        print(f"\n  Squeeze API key for tenant 'default' (shown once): {key}\n", flush=True)


@asynccontextmanager
async def lifespan(app: FastAPI):
    configure_logging(get_settings().log_level)
    bootstrap()
    sweeper = asyncio.create_task(sweep_forever())
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


def create_app() -> FastAPI:
    app = FastAPI(title="Squeeze", version="1", lifespan=lifespan,
                  description="Compression as a service for PyTorch models: upload, compress, measure.")
    install_error_handlers(app)
    for router in (models_router, datasets_router, jobs_router, artifacts_router, methods_router, ops_router):
        app.include_router(router)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        request_id = request.headers.get("x-request-id") or secrets.token_hex(8)
        token = request_id_var.set(request_id)
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
        except Exception:
            log.exception("unhandled error")
            response = error_response(500, "internal", "an unexpected error occurred; it has been logged")
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(request.scope.get("route"), "path", "unmatched")
            REQUEST_LATENCY.labels(request.method, route, str(status)).observe(elapsed)
            log.info("request", extra={"method": request.method, "path": request.url.path, "status": status,
                                       "duration_ms": round(elapsed * 1000, 2),
                                       "tenant_id": getattr(request.state, "tenant_id", None)})
            request_id_var.reset(token)
        response.headers["X-Request-ID"] = request_id
        return response

    return app


app = create_app()
