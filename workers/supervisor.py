"""Runs a child process (workers/child.py) in its sandbox (workers/sandbox.py) under limits: resident
memory, wall time, disk, and a stop request (cancel, lost ownership). Reports what happened as a
`ChildOutcome`, never raises for the child's sake, so the worker process itself survives anything the job
does. What the child says is parsed as the protocol's typed events; anything else is dropped."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
from pydantic import ValidationError

from workers.compression.contract.errors import JobErrorCode
from workers.compression.contract.inspection import DatasetInfo, ModelInfo
from workers.compression.contract.protocol import (
    EVENT,
    CompletedEvent,
    FailedEvent,
    InspectedEvent,
    Spec,
    StopReason,
    Work,
)
from workers.compression.contract.report import Report

from .sandbox import Mounts, SandboxLimits, launch

POLL_S = 0.1
MAX_LINE = 64 * 2**20  # one event line; a child that prints more on one line is not speaking the protocol
DISK_EVERY_S = 1.0


@dataclass
class ChildOutcome:
    ok: bool
    report: Report | None = None  # a run's report; for a failed run, what it still measured
    info: ModelInfo | DatasetInfo | None = None  # an inspection's findings, validated
    code: str | None = None
    message: str | None = None
    stopped: StopReason | None = None  # why the supervisor killed it
    peak_rss_mb: float = 0.0
    log_tail: str = ""


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


def keep_tail(path: Path, limit: int) -> None:
    """A child's stderr past `limit` bytes keeps its last quarter, after a line saying how much was dropped.
    The file is the parent's (opened O_APPEND and handed to the child as fd 2), so the child's next write
    lands after the kept tail."""
    try:
        size = path.stat().st_size
        if size <= limit:
            return
        with open(path, "r+b") as f:
            f.seek(size - limit // 4)
            tail = f.read()
            f.seek(0)
            f.write(f"[output truncated: {size - len(tail)} bytes dropped]\n".encode() + tail)
            f.truncate()
    except OSError:
        pass


def _disk_used(folders: list[Path]) -> int:
    total = 0
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
    return total


def job_disk_used(mounts: Mounts, log_path: Path) -> int:
    """What the job holds on the worker's disk: its writable folders and its stderr file (kept to a tail, but
    counted while it is there, so a job cannot park its disk quota's worth of output in its log)."""
    try:
        log = os.lstat(log_path).st_blocks * 512
    except OSError:
        log = 0
    return _disk_used(mounts.writable()) + log


def _read_lines(stream, lines: queue.Queue) -> None:
    """Protocol lines, each at most MAX_LINE bytes: a longer one is dropped, so a child cannot make the
    worker hold an unbounded line in memory."""
    oversized = False
    for chunk in iter(lambda: stream.readline(MAX_LINE), b""):
        complete = chunk.endswith(b"\n")
        if not oversized and complete:
            lines.put(chunk)
        oversized = not complete and (oversized or len(chunk) >= MAX_LINE)


def supervise(
    work: Work,
    mounts: Mounts,
    *,
    memory_limit_mb: int,
    time_limit_s: float,
    sandbox: bool,
    limits: SandboxLimits | None = None,
    on_event: Callable[[object], None] = lambda e: None,
    should_stop: Callable[[], StopReason | None] = lambda: None,
    check_every_s: float = 0.5,
    argv: list[str] | None = None,
) -> ChildOutcome:
    """`should_stop` is polled every `check_every_s`; a non-None answer (the reason) kills the child.
    `argv` replaces the child's command (tests run hostile code under the same limits)."""
    limits = limits or SandboxLimits()
    child = Child.start(work, mounts, memory_limit_mb, sandbox, limits, argv)
    watchdog = Watchdog(child, mounts, memory_limit_mb, time_limit_s, limits, should_stop, check_every_s)
    outcome = ChildOutcome(ok=False)
    while child.proc.poll() is None:
        outcome.stopped = watchdog.check()
        outcome.peak_rss_mb = watchdog.peak_rss_mb
        if outcome.stopped:
            _kill_group(child.proc)
            break
        child.drain(outcome, on_event)
        time.sleep(POLL_S)
    child.reader.join(timeout=5)
    child.drain(outcome, on_event)
    keep_tail(child.log_path, limits.log_bytes)  # what it wrote since the last look, too
    outcome.log_tail = _tail(child.log_path)
    disk_used = job_disk_used(mounts, child.log_path)
    explain(outcome, child.proc.returncode, sandbox, memory_limit_mb, time_limit_s, limits, disk_used)
    return outcome


@dataclass
class Child:
    """The sandboxed child process, its protocol lines (read on a thread, each bounded) and its log."""

    proc: subprocess.Popen
    lines: queue.Queue
    reader: threading.Thread
    log_path: Path

    @classmethod
    def start(
        cls, work: Work, mounts: Mounts, memory_limit_mb: int, sandbox: bool, limits: SandboxLimits, argv
    ) -> Child:
        mounts.host.mkdir(parents=True, exist_ok=True)
        mounts.host.chmod(0o700)
        spec_path, log_path = mounts.host / "spec.json", mounts.host / "child.log"
        # inside the sandbox the child's parent is bwrap, which dies with this worker (--die-with-parent)
        spec = Spec(work=work, memory_limit_mb=memory_limit_mb, parent_pid=None if sandbox else os.getpid())
        spec_path.write_text(spec.model_dump_json())
        child_spec = mounts.sandbox_path(spec_path) if sandbox else str(spec_path)
        how = launch(mounts, argv or [sys.executable, "-m", "workers.child", child_spec], limits, sandbox)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                how.argv,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=mounts.out if not sandbox else "/",
                start_new_session=True,  # its own process group: killing it kills whatever it started
                env=how.env,
                preexec_fn=how.preexec,
            )
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True)
        reader.start()
        return cls(proc, lines, reader, log_path)

    def drain(self, outcome: ChildOutcome, on_event: Callable[[object], None]) -> None:
        """Every protocol line read so far, validated as the protocol's typed events; anything else is
        dropped. The end events fill `outcome`; the others go to `on_event`."""
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            try:
                event = EVENT.validate_json(line)
            except ValidationError:
                continue  # not a protocol line: the child's fd 1 is stderr, so only a bug writes one
            if isinstance(event, CompletedEvent):
                outcome.ok, outcome.report = True, event.report
            elif isinstance(event, InspectedEvent):
                outcome.ok, outcome.info = True, event.info
            elif isinstance(event, FailedEvent):
                outcome.code, outcome.message, outcome.report = event.code, event.message, event.report
            else:
                on_event(event)


class Watchdog:
    """The child's limits, checked each poll: resident memory (the whole process tree), wall time, disk
    (every second), and the caller's stop request (every `check_every_s`). Returns why to stop, or None."""

    def __init__(
        self,
        child: Child,
        mounts: Mounts,
        memory_limit_mb: int,
        time_limit_s: float,
        limits: SandboxLimits,
        should_stop: Callable[[], StopReason | None],
        check_every_s: float,
    ):
        self.ps, self.mounts = psutil.Process(child.proc.pid), mounts
        self.should_stop, self.check_every_s = should_stop, check_every_s
        self.log_path, self.log_limit = child.log_path, limits.log_bytes
        self.memory_limit = memory_limit_mb * 2**20
        self.disk_limit = limits.disk_mb * 2**20
        self.deadline = time.monotonic() + time_limit_s
        self.next_check = self.next_disk = 0.0
        self.peak_rss_mb = 0.0

    def check(self) -> StopReason | None:
        rss = _tree_rss(self.ps)
        self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
        now = time.monotonic()
        if rss > self.memory_limit:
            return StopReason.MEMORY
        if now > self.deadline:
            return StopReason.TIME
        if now >= self.next_disk:
            self.next_disk = now + DISK_EVERY_S
            keep_tail(self.log_path, self.log_limit)
            return StopReason.DISK if job_disk_used(self.mounts, self.log_path) > self.disk_limit else None
        if now >= self.next_check:
            self.next_check = now + self.check_every_s
            return self.should_stop()
        return None


def explain(
    outcome: ChildOutcome,
    returncode: int,
    sandbox: bool,
    memory_limit_mb: int,
    time_limit_s: float,
    limits: SandboxLimits,
    disk_used: int,
) -> None:
    """Why a child that did not finish well ended, as a job error code and a message a person can act on."""
    if outcome.stopped == StopReason.MEMORY:
        outcome.ok, outcome.code = False, JobErrorCode.RESOURCE_EXHAUSTED
        outcome.message = (
            f"the job used more than its memory limit of {memory_limit_mb} MB and was stopped; "
            "use a smaller model, batch or dataset, or a worker with more memory"
        )
    elif outcome.stopped == StopReason.TIME:
        outcome.ok, outcome.code = False, JobErrorCode.TIMEOUT
        outcome.message = f"the job ran longer than its time limit of {time_limit_s:.0f} s and was stopped"
    elif outcome.stopped == StopReason.DISK:
        outcome.ok, outcome.code = False, JobErrorCode.DISK_EXHAUSTED
        outcome.message = (
            f"the job wrote more than its disk limit of {limits.disk_mb} MB (artifacts, checkpoints and its log) "
            "and was stopped"
        )
    elif outcome.stopped is not None or outcome.ok or outcome.code is not None:
        return
    elif disk_used >= 0.9 * limits.disk_mb * 2**20:
        # died writing: a file past RLIMIT_FSIZE (EFBIG, or SIGXFSZ) or the quota about to be hit
        outcome.code = JobErrorCode.DISK_EXHAUSTED
        outcome.message = f"the job died at its disk limit of {limits.disk_mb} MB (artifacts, checkpoints and its log)"
    else:
        cause = _death_cause(returncode, sandbox)
        near_limit = outcome.peak_rss_mb > 0.9 * memory_limit_mb
        outcome.code = JobErrorCode.RESOURCE_EXHAUSTED if near_limit else JobErrorCode.WORKER_CRASHED
        outcome.message = f"the job's process died ({cause}) without a result" + (
            f" near its memory limit of {memory_limit_mb} MB" if near_limit else ""
        )
        last = [ln for ln in outcome.log_tail.strip().splitlines() if ln.strip()][-1:]
        if last:
            outcome.message += f"; last log line: {last[0][:300]}"


def _death_cause(rc: int, sandbox: bool) -> str:
    """How the child died, in words. bwrap reports a child killed by signal N as exit code 128 + N."""
    number = -rc if rc < 0 else rc - 128 if sandbox and rc > 128 else None
    try:
        return f"signal {signal.Signals(number).name}" if number else f"exit code {rc}"
    except ValueError:
        return f"exit code {rc}"
