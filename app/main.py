"""The FastAPI application: routers per domain, one error shape, JSON logs, metrics, the sweeper.

uvicorn app.main:app        (after `alembic upgrade head`)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.store.config import get_settings
from app.store.db import session_scope
from app.store.logs import configure_logging, request_id_var

from .artifacts.router import router as artifacts_router
from .auth.service import ensure_bootstrap_key
from .catalog.router import router as methods_router
from .datasets.router import router as datasets_router
from .errors import install_error_handlers
from .jobs.router import body_schemas as job_body_schemas
from .jobs.router import router as jobs_router
from .models.router import router as models_router
from .ops.metrics import REQUEST_LATENCY
from .ops.router import router as ops_router
from .sweeper import remove_stale_uploads, sweep_forever
from .usage.router import router as usage_router
from .web.router import router as web_router

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
    remove_stale_uploads()  # a previous process killed mid-upload left its partial file
    sweeper = asyncio.create_task(sweep_forever())
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper


class ObserveMiddleware:
    """Request id, one JSON log line and the latency histogram per request. Plain ASGI: Starlette's
    BaseHTTPMiddleware costs a task and a stream copy per request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or secrets.token_hex(8)
        token = request_id_var.set(request_id)
        start, status, observed = time.perf_counter(), [500], [False]

        def observe() -> float:
            elapsed = time.perf_counter() - start
            if not observed[0]:
                observed[0] = True
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUEST_LATENCY.labels(scope["method"], route, str(status[0])).observe(elapsed)
            return elapsed

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode("latin-1"))]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # counted before the last byte leaves: a client that has read the response and then asks
                # /metrics finds it there (counted after, a busy server could answer /metrics first)
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = observe()
            state = scope.get("state") or {}
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant_id": state.get("tenant_id"),
                },
            )
            request_id_var.reset(token)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Squeeze",
        version="1",
        lifespan=lifespan,
        description="Compression as a service for PyTorch models: upload, compress, measure.",
    )
    install_error_handlers(app)
    for router in (
        models_router,
        datasets_router,
        jobs_router,
        artifacts_router,
        methods_router,
        usage_router,
        ops_router,
        web_router,
    ):
        app.include_router(router)

    app.add_middleware(ObserveMiddleware)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(job_body_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


app = create_app()
