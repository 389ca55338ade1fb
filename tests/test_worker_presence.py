"""The worker's presence beat, a thread of the worker's main process, beside Celery's prefork pool that forks
that process: a pool process forked mid-beat must not inherit SQLite's or SQLAlchemy's locks held (it would
hang on its first query with a job's message in hand, the job queued forever behind a live worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.stack import ROOT

FORKS = """
import os, signal, sys, time
from app.serve import migrate
from app.store.db import get_engine
from app.store.presence import beat, keep_beating

migrate()
keep_beating("w", ["cpu"], {"mode": "bwrap"}, every_s=0.0)  # beating without pause: the worst case
hung = 0
for _ in range(40):
    pid = os.fork()
    if pid == 0:  # what a pool process does first (workers/tasks.py), then its first query
        get_engine().dispose(close=False)
        beat("pool-process", ["cpu"], {})
        os._exit(0)
    deadline = time.monotonic() + 10
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            hung += 1
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
print("hung", hung)
"""


def test_a_process_forked_while_the_worker_beats_can_use_the_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUEEZE_")} | {"SQUEEZE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(FORKS)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["hung", "0"], out.stdout
