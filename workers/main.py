"""`squeeze-worker`: this machine's Celery workers, in two lanes.

The jobs lane takes the job queues: `cpu` always, `gpu` too when this machine has CUDA
(SQUEEZE_WORKER_QUEUES=auto); a worker without CUDA refuses `gpu`, so `device: "cuda"` jobs wait, visibly
queued, for a GPU worker instead of silently running on a CPU. The inspection lane takes `inspect`
(uploads' inspections and webhook retries) in a process of its own, started beside it and ending with it:
an upload is inspected while a job runs, never after it, whoever's job it is."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from app.store.broker import CPU_QUEUE, GPU_QUEUE, INSPECT_QUEUE, get_celery
from app.store.config import get_settings
from app.store.presence import beat, keep_beating
from workers.compression.contract.inspection import Isolation

from .hardware import worker_has_cuda
from .lifecycle import die_with_parent
from .sandbox import SandboxUnavailable, probe


def queues_for(setting: str, has_cuda: bool) -> list[str]:
    """The job queues the setting names (the inspection lane serves `inspect` beside them)."""
    if setting == "auto":
        return [CPU_QUEUE, GPU_QUEUE] if has_cuda else [CPU_QUEUE]
    queues = [q.strip() for q in setting.split(",") if q.strip() and q.strip() != INSPECT_QUEUE]
    unknown = set(queues) - {CPU_QUEUE, GPU_QUEUE}
    if unknown or not queues:
        raise SystemExit(f"SQUEEZE_WORKER_QUEUES: unknown queue(s) {sorted(unknown)}; use cpu, gpu or auto")
    if GPU_QUEUE in queues and not has_cuda:
        raise SystemExit("SQUEEZE_WORKER_QUEUES asks for the gpu queue but this machine has no CUDA GPU")
    return queues


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="squeeze-worker", description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=f"squeeze@{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--lane", choices=["both", "jobs", "inspect"], default="both", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if parent := os.environ.pop("SQUEEZE_PARENT_PID", None):  # started by app.serve: end with it
        die_with_parent(signal.SIGTERM, int(parent))
    settings = get_settings()
    settings.ensure_dirs()
    # untrusted models are never loaded without the sandbox, unless an operator turned it off
    isolation = wait_for_sandbox(args.name if args.lane != "inspect" else f"inspect-{args.name}", settings)
    has_cuda = worker_has_cuda()
    os.environ["SQUEEZE_WORKER_HAS_CUDA"] = "1" if has_cuda else "0"  # pool processes inherit the answer
    if args.lane == "inspect":
        queues, name, concurrency = [INSPECT_QUEUE], f"inspect-{args.name}", 1
    else:
        queues, name, concurrency = queues_for(settings.worker_queues, has_cuda), args.name, settings.worker_concurrency
    if args.lane == "both":
        start_inspection_lane(args.name)
    sandbox = "OFF (SQUEEZE_SANDBOX=off): jobs run unisolated" if isolation.mode == "off" else "bwrap"
    print(
        f"squeeze-worker {name}: queues {','.join(queues)}, cuda={has_cuda}, sandbox {sandbox}",
        file=sys.stderr,
        flush=True,
    )
    keep_beating(name, queues, isolation.model_dump(), settings.heartbeat_interval_s)
    get_celery().worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(concurrency),
            "--hostname",
            name,
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
        ]
    )


SANDBOX_RETRY_S = 15.0


def wait_for_sandbox(name: str, settings) -> Isolation:
    """The isolation this worker gives its jobs. A worker that cannot sandbox takes no work: it says why where
    an operator looks (its log once, and /readyz's `sandbox` check through its presence beat) and looks again
    every SANDBOX_RETRY_S, so installing bubblewrap is the whole fix, with no restart loop."""
    said = None
    while True:
        try:
            return probe(settings.sandbox)
        except SandboxUnavailable as e:
            if str(e) != said:
                print(f"squeeze-worker {name}: cannot start jobs: {e}", file=sys.stderr, flush=True)
                said = str(e)
            try:
                beat(name, [], {"mode": "unavailable", "problem": str(e)[:500]})
            except Exception:  # the store is down too: the log says it
                pass
            time.sleep(SANDBOX_RETRY_S)


def start_inspection_lane(name: str) -> subprocess.Popen:
    """The `inspect` queue's own worker process, ending with this one (SQUEEZE_PARENT_PID)."""
    return subprocess.Popen(
        [sys.executable, "-m", "workers.main", "--name", name, "--lane", "inspect"],
        env={**os.environ, "SQUEEZE_PARENT_PID": str(os.getpid())},
    )


if __name__ == "__main__":
    main()
