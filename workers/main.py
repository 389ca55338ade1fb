"""`squeeze-worker`: one Celery worker process (prefork pool) on this machine's queues.

Queues: `inspect` and `cpu` always; `gpu` too when this machine has CUDA (SQUEEZE_WORKER_QUEUES=auto). A worker
without CUDA refuses the `gpu` queue, so `device: "cuda"` jobs wait, visibly queued, for a GPU worker
instead of silently running on a CPU."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys

from app.store.broker import CPU_QUEUE, GPU_QUEUE, INSPECT_QUEUE, get_celery
from app.store.config import get_settings
from app.store.presence import keep_beating

from .hardware import worker_has_cuda
from .lifecycle import die_with_parent
from .sandbox import SandboxUnavailable, probe


def queues_for(setting: str, has_cuda: bool) -> list[str]:
    """The job queues the setting names, after the inspection queue every worker serves."""
    if setting == "auto":
        return [INSPECT_QUEUE, CPU_QUEUE, GPU_QUEUE] if has_cuda else [INSPECT_QUEUE, CPU_QUEUE]
    queues = [q.strip() for q in setting.split(",") if q.strip() and q.strip() != INSPECT_QUEUE]
    unknown = set(queues) - {CPU_QUEUE, GPU_QUEUE}
    if unknown or not queues:
        raise SystemExit(f"SQUEEZE_WORKER_QUEUES: unknown queue(s) {sorted(unknown)}; use cpu, gpu or auto")
    if GPU_QUEUE in queues and not has_cuda:
        raise SystemExit("SQUEEZE_WORKER_QUEUES asks for the gpu queue but this machine has no CUDA GPU")
    return [INSPECT_QUEUE, *queues]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="squeeze-worker", description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=f"squeeze@{socket.gethostname()}-{os.getpid()}")
    args = parser.parse_args(argv)
    if parent := os.environ.pop("SQUEEZE_PARENT_PID", None):  # started by app.serve: end with it
        die_with_parent(signal.SIGTERM, int(parent))
    settings = get_settings()
    settings.ensure_dirs()
    try:  # untrusted models are never loaded without the sandbox, unless an operator turned it off
        isolation = probe(settings.sandbox)
    except SandboxUnavailable as e:
        raise SystemExit(f"squeeze-worker: {e}") from None
    has_cuda = worker_has_cuda()
    os.environ["SQUEEZE_WORKER_HAS_CUDA"] = "1" if has_cuda else "0"  # pool processes inherit the answer
    queues = queues_for(settings.worker_queues, has_cuda)
    sandbox = "OFF (SQUEEZE_SANDBOX=off): jobs run unisolated" if isolation.mode == "off" else "bwrap"
    print(
        f"squeeze-worker {args.name}: queues {','.join(queues)}, cuda={has_cuda}, sandbox {sandbox}",
        file=sys.stderr,
        flush=True,
    )
    keep_beating(args.name, queues, isolation.model_dump(), settings.heartbeat_interval_s)
    get_celery().worker_main(
        [
            "worker",
            "--queues",
            ",".join(queues),
            "--concurrency",
            str(settings.worker_concurrency),
            "--hostname",
            args.name,
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
