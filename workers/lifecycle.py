"""Processes that must not outlive their parent (Linux `PR_SET_PDEATHSIG`): a job's child process when
its worker is killed, and the worker that `app.serve` started when the service stops."""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Asks the kernel to send `sig` to this process when its parent dies. With `parent_pid`, exits at once
    if that parent is already gone (it may have died before the request took effect)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))
    except (OSError, AttributeError):  # not Linux: best effort only
        return
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
