"""Runs a child process (workers/child.py) under limits: resident memory, wall time, and a stop
request (cancel, lost ownership). Reports what happened as an `Outcome`, never raises for the child's
sake, so the worker process itself survives anything the job does."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

POLL_S = 0.1


@dataclass
class Outcome:
    ok: bool
    data: dict | None = None
    code: str | None = None
    message: str | None = None
    stopped: str | None = None  # why the supervisor killed it: memory, time, cancel, lost
    peak_rss_mb: float = 0.0
    log_tail: str = ""
    events: list = field(default_factory=list)


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def supervise(
    spec: dict,
    workdir: Path,
    *,
    memory_limit_mb: int,
    time_limit_s: float,
    on_event: Callable[[dict], None] = lambda e: None,
    should_stop: Callable[[], str | None] = lambda: None,
    check_every_s: float = 0.5,
    env: dict | None = None,
) -> Outcome:
    """`should_stop` is polled every `check_every_s`; a non-None answer (the reason) kills the child."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, log_path = workdir / "spec.json", workdir / "child.log"
    spec_path.write_text(json.dumps(dict(spec, memory_limit_mb=memory_limit_mb, parent_pid=os.getpid())))
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.child", str(spec_path)],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            cwd=os.getcwd(),
            start_new_session=True,  # its own process group: killing it kills whatever it started
            env=env,
        )
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    deadline, next_check = time.monotonic() + time_limit_s, 0.0
    outcome = Outcome(ok=False)
    limit = memory_limit_mb * 1024 * 1024

    def drain() -> None:
        while True:
            try:
                line = lines.get_nowait()
            except queue.Empty:
                return
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "result":
                outcome.ok, outcome.data = True, event.get("data")
            elif event.get("event") == "error":
                outcome.code, outcome.message = event.get("code"), event.get("message")
                outcome.data = event.get("results")
            else:
                on_event(event)

    while proc.poll() is None:
        rss = _tree_rss(ps)
        outcome.peak_rss_mb = max(outcome.peak_rss_mb, rss / 2**20)
        if rss > limit:
            outcome.stopped = "memory"
        elif time.monotonic() > deadline:
            outcome.stopped = "time"
        elif time.monotonic() >= next_check:
            next_check = time.monotonic() + check_every_s
            outcome.stopped = should_stop()
        if outcome.stopped:
            _kill_group(proc)
            break
        drain()
        time.sleep(POLL_S)
    reader.join(timeout=5)
    drain()
    outcome.log_tail = _tail(log_path)
    if outcome.stopped == "memory":
        outcome.ok, outcome.code = False, "resource_exhausted"
        outcome.message = (
            f"the job used more than its memory limit of {memory_limit_mb} MB and was stopped; "
            "use a smaller model, batch or dataset, or a worker with more memory"
        )
    elif outcome.stopped == "time":
        outcome.ok, outcome.code = False, "timeout"
        outcome.message = f"the job ran longer than its time limit of {time_limit_s:.0f} s and was stopped"
    elif outcome.stopped is None and not outcome.ok and outcome.code is None:
        rc = proc.returncode
        cause = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        near_limit = outcome.peak_rss_mb > 0.9 * memory_limit_mb
        outcome.code = "resource_exhausted" if near_limit else "worker_crashed"
        outcome.message = f"the job's process died ({cause}) without a result" + (
            f" near its memory limit of {memory_limit_mb} MB" if near_limit else ""
        )
        last = [ln for ln in outcome.log_tail.strip().splitlines() if ln.strip()][-1:]
        if last:
            outcome.message += f"; last log line: {last[0][:300]}"
    return outcome
