"""The sandbox holds even when a tenant's bytes do run code (a loader bug): no network, no secrets, no
view of the store or of other jobs, no writes outside its folder, bounded processes, disk and time.
These run plain Python inside the same sandbox the worker starts its job children in."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import workers
from tests.hostile import ESCAPES
from workers.compression.contract.protocol import InspectDataset, StopReason
from workers.sandbox import Mounts, SandboxLimits, launch, probe
from workers.supervisor import supervise


def _run(tmp_path: Path, code: str, limits: SandboxLimits | None = None, timeout: float = 60):
    mounts = Mounts(tmp_path / "job")
    mounts.host.mkdir(parents=True, exist_ok=True)
    (mounts.host / "spec.json").write_text("{}")
    spec = launch(mounts, [sys.executable, "-c", code], limits or SandboxLimits(), True)
    out = subprocess.run(
        spec.argv, capture_output=True, text=True, timeout=timeout, env=spec.env, preexec_fn=spec.preexec
    )
    return out, mounts


def test_the_worker_has_a_sandbox():
    isolation = probe("bwrap")
    assert isolation.mode == "bwrap" and any("network" in layer for layer in isolation.layers)


def test_no_socket_reaches_the_host(tmp_path):
    with socket.socket() as server:  # a real listener on the host's loopback, where the API would be
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        out, _ = _run(tmp_path, ESCAPES["socket"].format(port=port))
        server.settimeout(0.5)
        with pytest.raises(TimeoutError):
            server.accept()
    assert out.returncode != 0 and ("ConnectionRefused" in out.stderr or "unreachable" in out.stderr), out.stderr


def test_no_secret_in_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_BOOTSTRAP_API_KEY", "sqz_secret_in_the_worker")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws_secret_in_the_worker")
    out, _ = _run(tmp_path, "import os; print(sorted(os.environ.items()))")
    assert out.returncode == 0, out.stderr
    assert "secret_in_the_worker" not in out.stdout and "SQUEEZE_" not in out.stdout
    environ, _ = _run(tmp_path, ESCAPES["environ"])  # pid 1 is the sandbox's own init, not the worker
    assert "secret_in_the_worker" not in environ.stdout + environ.stderr


def test_no_view_of_the_store_the_home_or_other_jobs(tmp_path):
    store = tmp_path / "var" / "squeeze.db"
    store.parent.mkdir()
    store.write_bytes(b"SQLite format 3\0" + b"tenant secrets" * 8)
    other_job = tmp_path / "job-of-another-tenant" / "out" / "model.pt2"
    other_job.parent.mkdir(parents=True)
    other_job.write_bytes(b"another tenant's model")
    for code in (ESCAPES["read_store"].format(store=str(store)), f"print(open({str(other_job)!r}).read())"):
        out, _ = _run(tmp_path, code)
        assert out.returncode != 0 and "No such file" in out.stderr, out.stdout + out.stderr
    # /root appears only where the interpreter lives under it (pyenv here): none of its other files
    out, _ = _run(tmp_path, ESCAPES["home"])
    python = Path(sys.base_prefix).resolve()
    allowed = {python.parts[2]} if python.parts[1:2] == ("root",) else set()
    if allowed:
        assert out.returncode == 0 and set(json.loads(out.stdout.replace("'", '"'))) <= allowed, out.stdout
    else:
        assert out.returncode != 0 and "No such file" in out.stderr
    out, _ = _run(tmp_path, "import os, json; print(json.dumps([sorted(os.listdir('/')), os.getuid()]))")
    top, uid = json.loads(out.stdout)
    assert not {"etc", "var", "home", "srv"} & set(top), top  # no configuration, no store, no other home
    assert uid != 0


def test_a_python_reached_through_a_symlink_starts_in_the_sandbox(tmp_path):
    """A `.venv` linked from another checkout: the worker runs as the link's python, and the child is
    started by that path, which must lead to the bound installation inside too."""
    venv = tmp_path / "checkout" / ".venv"
    venv.parent.mkdir()
    venv.symlink_to(Path(sys.prefix).resolve())
    code = (
        "import subprocess, sys; from pathlib import Path\n"
        "from workers.sandbox import Mounts, SandboxLimits, launch\n"
        f"mounts = Mounts(Path({str(tmp_path / 'job')!r})); mounts.host.mkdir()\n"
        "(mounts.host / 'spec.json').write_text('{}')\n"
        "spec = launch(mounts, [sys.executable, '-c', 'import sys, numpy; print(sys.prefix)'], SandboxLimits(), True)\n"
        "out = subprocess.run(spec.argv, capture_output=True, text=True, env=spec.env, preexec_fn=spec.preexec)\n"
        "print(out.returncode, out.stdout.strip(), out.stderr[-300:])\n"
    )
    python = venv / "bin" / Path(sys.executable).name
    checkout = Path(workers.__file__).parent.parent
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120, cwd=checkout)
    assert out.stdout.split()[:2] == ["0", str(venv)], out.stdout + out.stderr


def test_writes_stay_inside(tmp_path):
    outside = tmp_path / "escaped.txt"
    out, mounts = _run(tmp_path, ESCAPES["write_outside"].format(outside=str(outside)))
    assert out.returncode != 0 and not outside.exists()
    out, mounts = _run(tmp_path, "open('/job/out/artifact.bin', 'wb').write(b'ok'); open('/tmp/scratch', 'w')")
    assert out.returncode == 0, out.stderr
    assert (mounts.out / "artifact.bin").read_bytes() == b"ok"


def test_process_count_is_bounded(tmp_path):
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(400):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('refused after', n, e.errno)\n"
    )
    out, _ = _run(tmp_path, code, SandboxLimits(processes=64))
    assert "refused after" in out.stdout, out.stdout + out.stderr
    assert int(out.stdout.split()[2]) < 64


def test_tmp_is_size_limited(tmp_path):
    code = (
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        for _ in range(64): f.write(b'0' * 2**20); f.flush()\n"
        "except OSError as e: print('full', e.errno)\n"
    )
    out, _ = _run(tmp_path, code, SandboxLimits(tmp_mb=16))
    assert "full 28" in out.stdout, out.stdout + out.stderr  # ENOSPC


def _job_dir(tmp_path: Path) -> Mounts:
    return Mounts(tmp_path / "sup")


def test_supervised_child_over_its_disk_quota_is_stopped(tmp_path):
    # a child that fills its out/ folder: the supervisor's quota stops it with its own code
    mounts = _job_dir(tmp_path)
    started = time.monotonic()
    outcome = supervise(
        InspectDataset(path="/dev/null"),
        mounts,
        memory_limit_mb=2048,
        time_limit_s=60,
        sandbox=True,
        limits=SandboxLimits(disk_mb=32),
        argv=[
            sys.executable,
            "-c",
            "import itertools, time\nfor i in itertools.count():\n"
            "    open(f'/job/out/part{i}', 'wb').write(b'0' * 2**22); time.sleep(0.05)",
        ],
    )
    assert outcome.stopped == StopReason.DISK and outcome.code == "disk_exhausted", outcome
    # one file past the limit: RLIMIT_FSIZE refuses the write, and the job ends with the same code
    outcome = supervise(
        InspectDataset(path="/dev/null"),
        _job_dir(tmp_path / "big"),
        memory_limit_mb=2048,
        time_limit_s=60,
        sandbox=True,
        limits=SandboxLimits(disk_mb=32),
        argv=[sys.executable, "-c", "f = open('/job/out/big', 'wb')\nwhile True:\n    f.write(b'0' * 2**20)"],
    )
    assert outcome.code == "disk_exhausted", outcome
    assert time.monotonic() - started < 30


def test_supervised_child_that_loops_is_stopped_at_its_time_limit(tmp_path):
    mounts = _job_dir(tmp_path)
    outcome = supervise(
        InspectDataset(path="/dev/null"),
        mounts,
        memory_limit_mb=2048,
        time_limit_s=3,
        sandbox=True,
        limits=SandboxLimits(),
        argv=[sys.executable, "-c", "while True: pass"],
    )
    assert outcome.stopped == StopReason.TIME and outcome.code == "timeout"


FORGED = {  # Python expressions the child evaluates (the argument list stays short)
    "a negative parameter count": "{'params': -5}",
    "a field the contract does not have": "{'served_as_fact': 'yes'}",
    "ten thousand layers": "{'layers': [{'name': f'l{i}', 'type': 'Linear', 'in': 1, 'out': 1} for i in range(10_000)]}",
    "a note of a megabyte": "{'notes': ['x' * 2**20]}",
}
INFO = {"kind": "model", "format": "pt2", "runtime": "eager", "size_bytes": 1, "params": 1, "nonzero_params": 1}


def _inspected(tmp_path: Path, info: str):
    code = f"import json, sys; sys.stdout.write(json.dumps({{'event': 'inspected', 'info': {info}}}) + '\\n')"
    return supervise(
        InspectDataset(path="/dev/null"),
        _job_dir(tmp_path),
        memory_limit_mb=2048,
        time_limit_s=60,
        sandbox=True,
        argv=[sys.executable, "-c", code],
    )


@pytest.mark.parametrize("forgery", FORGED)
def test_an_inspection_outside_the_contract_is_not_taken_as_fact(tmp_path, forgery):
    """What a child says it found is validated against the contract's bounds (contract/inspection.py) before
    anything stores it: a child that ran a tenant's code cannot make the API serve a forged `info`."""
    outcome = _inspected(tmp_path, f"{{**{INFO!r}, **{FORGED[forgery]}}}")
    assert not outcome.ok and outcome.info is None, outcome
    outcome = _inspected(tmp_path / "good", repr(INFO))  # the same answer inside the bounds is taken
    assert outcome.ok and outcome.info.params == 1
