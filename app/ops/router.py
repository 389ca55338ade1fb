from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from app.store.blobs import get_blob_store
from app.store.broker import get_celery
from app.store.config import get_settings
from app.store.db import get_engine
from app.store.presence import seen_since

from .metrics import registry

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


def _check(name: str, probe) -> tuple[str, str | None]:
    try:
        probe()
        return name, None
    except Exception as e:
        return name, f"{type(e).__name__}: {e}"[:300]


def _database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


def _broker() -> None:
    with get_celery().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


def _workers() -> list[dict]:
    """Workers seen within the heartbeat timeout, each with the isolation its jobs run under."""
    return [
        {"name": w.name, "queues": w.queues.split(","), "isolation": w.isolation, "seen_at": w.seen_at.isoformat()}
        for w in seen_since(get_settings().heartbeat_timeout_s)
    ]


@router.get("/readyz")
async def readyz() -> JSONResponse:
    checks = [
        await run_in_threadpool(_check, n, p)
        for n, p in (
            ("database", _database),
            ("broker", _broker),
            ("blob_store", lambda: get_blob_store().check_writable()),
        )
    ]
    workers: list[dict] = []
    if checks[0][1] is None:  # without a live worker nothing submitted would ever run: not ready
        found: list[list[dict]] = []
        name, err = await run_in_threadpool(_check, "workers", lambda: found.append(_workers()))
        workers = found[0] if found else []
        if err is None and not workers:
            err = f"no worker seen in the last {get_settings().heartbeat_timeout_s:.0f} s"
        checks.append((name, err))
    body = {
        "status": "ok" if all(err is None for _, err in checks) else "unavailable",
        "checks": {n: ("ok" if err is None else err) for n, err in checks},
        "workers": workers,
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.get("/metrics")
async def metrics() -> Response:
    return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)
