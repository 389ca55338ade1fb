"""Runs the service on one machine: applies migrations, creates the first API key, starts one Celery
worker process and the API. `make run` is this with the embedded defaults (SQLite, local blobs, a
broker in a SQLite file); with SQUEEZE_DATABASE_URL / SQUEEZE_BROKER_URL it runs against PostgreSQL
and Redis the same way.

    python -m app.serve [--host 127.0.0.1] [--port 8000] [--no-worker]"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn
from alembic import command
from alembic.config import Config

from app.store.config import get_settings
from app.store.db import session_scope

from .auth.service import ensure_bootstrap_key
from .http import GuardedH11Protocol

ROOT = Path(__file__).resolve().parents[1]


def migrate() -> None:
    command.upgrade(Config(str(ROOT / "alembic.ini")), "head")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-worker", action="store_true", help="API only (workers run elsewhere)")
    args = parser.parse_args(argv)
    settings = get_settings()
    settings.ensure_dirs()
    migrate()
    with session_scope() as session:
        key = ensure_bootstrap_key(session, settings.bootstrap_api_key)
    url = f"http://{args.host}:{args.port}"
    print(f"\nSqueeze is starting at {url}", flush=True)
    print(f"  store: {settings.database_url}\n  broker: {settings.broker_url}\n  blobs: {settings.blob_dir}")
    if key:
        print(f"  API key for tenant 'default': {key}")
    elif not settings.bootstrap_api_key:
        print("  API key: the one printed at first start (or: squeeze-admin create-key --tenant default)")
    print(f"  try: curl -H 'Authorization: Bearer <key>' {url}/v1/methods", flush=True)
    cli = Path(sys.executable).parent / "squeeze"
    print(f"  CLI: SQUEEZE_URL={url} SQUEEZE_API_KEY=<key> {cli} methods   (or put {cli.parent} on PATH)\n", flush=True)
    GuardedH11Protocol.header_timeout_s = settings.header_timeout_s
    worker = None if args.no_worker else WorkerSupervisor()
    try:
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            log_config=None,
            http=GuardedH11Protocol,  # a request gets HEADER_TIMEOUT_S to arrive (slowloris)
            # X-Forwarded-For / -Proto are believed only from the proxies named here (none by default):
            # otherwise any caller could pick the address its failed keys are counted against
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=settings.trusted_proxies or None,
            limit_concurrency=settings.max_connections,
        )
    finally:
        if worker is not None:
            worker.stop()


class WorkerSupervisor:
    """Keeps one worker process running: a worker that dies (kill -9, out of memory) is started again,
    after 1, 2, 4 ... up to 60 s when it keeps dying; the jobs it held are requeued by the API's sweeper."""

    def __init__(self):
        self.stopping = threading.Event()
        self.process, self.started_at = self._start(), time.monotonic()
        self.thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self.thread.start()

    @staticmethod
    def _start() -> subprocess.Popen:
        # SIGTERM (a warm shutdown) reaches the worker however this process ends: uvicorn re-raises the
        # signal that stopped it, so stop() does not always run
        # no preexec_fn: forking a process with threads (uvicorn's, this one) and running Python before
        # exec can deadlock; the worker asks for SIGTERM on its parent's death itself (SQUEEZE_PARENT_PID)
        return subprocess.Popen(
            [sys.executable, "-m", "workers.main"],
            cwd=ROOT,
            env={**os.environ, "SQUEEZE_PARENT_PID": str(os.getpid())},
        )

    def _watch(self) -> None:
        delay = 0.5
        while not self.stopping.wait(1.0):
            code = self.process.poll()
            if code is None:
                continue
            # a worker that ran a while before dying restarts at once; one that keeps dying at start backs off
            delay = 1.0 if time.monotonic() - self.started_at > 120 else min(60.0, delay * 2)
            print(
                f"squeeze: the worker exited ({code}); starting it again in {delay:.0f} s", file=sys.stderr, flush=True
            )
            if self.stopping.wait(delay):
                return
            try:
                self.process, self.started_at = self._start(), time.monotonic()
            except OSError as e:  # fork failed (memory): try again on the next round rather than stop watching
                print(f"squeeze: could not start the worker: {e}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self.stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown: a running job is requeued by the sweeper
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


if __name__ == "__main__":
    main()
