"""The embedded default, started exactly as `make run` starts it (`python -m app.serve`, no server
needed: SQLite, local blobs, kombu's SQLAlchemy transport on a SQLite file, a real Celery worker)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.stack import ROOT, Stack, log_tails, sha256_of, upload, wait_job, wait_ready
from workers.compression import load_model


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("embedded"), {})
    for key in [
        k
        for k in stack.env
        if k in ("SQUEEZE_DATABASE_URL", "SQUEEZE_BROKER_URL", "SQUEEZE_BLOB_DIR", "SQUEEZE_BOOTSTRAP_API_KEY")
    ]:
        del stack.env[key]  # nothing configured: the defaults under SQUEEZE_HOME
    stack.start_api(with_worker=True)
    printed = re.search(r"API key for tenant 'default': (\S+)", stack.api_log.read_text())
    assert printed, stack.api_log.read_text()
    stack.api_key = printed.group(1)
    yield stack
    stack.stop()


def run_example(args: list[str], stack: Stack, **kwargs) -> subprocess.CompletedProcess:
    """An example run as a user runs it; one that hangs fails with what it printed and the service's logs."""
    try:
        return subprocess.run(args, capture_output=True, text=True, **kwargs)
    except subprocess.TimeoutExpired as e:
        printed = (e.stdout or b"")[-2000:].decode("utf-8", "replace") if isinstance(e.stdout, bytes) else e.stdout
        raise AssertionError(f"timed out; it printed: {printed}{log_tails(stack.logs)}") from None


def test_embedded_end_to_end(embedded, cnn_pt2, digits_npz, tmp_path):
    assert (embedded.home / "squeeze.db").exists()
    with embedded.client() as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "ok", ready
        model = wait_ready(c, "models", upload(c, "models", cnn_pt2).json()["id"])
        dataset = wait_ready(c, "datasets", upload(c, "datasets", digits_npz).json()["id"])
        assert model["status"] == dataset["status"] == "ready"
        job = c.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "dataset_id": dataset["id"],
                "recipe": {
                    "steps": [{"method": "export", "format": "onnx"}, {"method": "quantize", "scheme": "int8_dynamic"}]
                },
            },
        )
        assert job.status_code == 202, job.text
        done = wait_job(c, job.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        assert [a["format"] for a in done["artifacts"]] == ["onnx", "onnx"]
        final = done["artifacts"][-1]
        data = c.get(final["download_url"]).content
        assert sha256_of(data) == final["sha256"]
        path = tmp_path / final["filename"]
        path.write_bytes(data)
        assert load_model(path).format == "onnx"
        assert done["results"]["final"]["size_ratio"] > 1.5  # int8 weights in ONNX
    assert (embedded.home / "broker.db").exists() and (embedded.home / "blobs" / "sha256").is_dir()
    # a second start finds the key already made and prints no new one
    embedded.stop()
    embedded.start_api(with_worker=True)
    assert embedded.api_log.read_text().count("API key for tenant 'default':") == 1
    with embedded.client() as c:
        assert c.get(f"/v1/jobs/{done['id']}").json()["status"] == "succeeded"


def test_api_process_never_imports_torch(embedded):
    import psutil

    api = psutil.Process(embedded.api.pid)
    maps = open(f"/proc/{api.pid}/maps").read()
    assert "libtorch" not in maps  # uploads are sniffed and recipes validated without PyTorch
    assert api.memory_info().rss < 400 * 2**20


def test_the_readme_python_and_sdk_examples(embedded, cnn_pt2, digits_npz, tmp_path):
    """README: the Python and SDK examples, run as written (one environment convention, every name defined)
    against the embedded service."""
    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```")[0] for b in readme.split("```python\n")[1:]]
    plain = next(b for b in blocks if "httpx.Client" in b)
    sdk = next(b for b in blocks if "from squeeze_client import" in b)
    (tmp_path / "out").mkdir()
    shutil.copy(cnn_pt2, tmp_path / "out" / "digits.pt2")
    shutil.copy(digits_npz, tmp_path / "out" / "digits.npz")
    env = {**os.environ, "SQUEEZE_URL": embedded.url, "SQUEEZE_API_KEY": embedded.api_key}
    for name, block in (("plain", plain), ("sdk", sdk)):
        script = tmp_path / f"{name}.py"
        script.write_text(block)
        out = run_example([sys.executable, str(script)], embedded, cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, (name, out.stderr[-3000:])
        if name == "plain":
            assert out.stdout.startswith("succeeded {") and "size_ratio" in out.stdout
        else:
            assert "size_ratio" in out.stdout
    assert (tmp_path / "out" / "digits_int8.pt2").stat().st_size > 0  # the download landed in out/, as written


def readme_block(lang: str, containing: str) -> str:
    readme = (ROOT / "README.md").read_text()
    return next(b.split("```")[0] for b in readme.split(f"```{lang}\n")[1:] if containing in b.split("```")[0])


def test_the_readme_shell_and_cli_examples(embedded, tmp_path):
    """README: the curl and CLI examples, run by bash as written (`set -euo pipefail`, so any failed
    command fails the test) in a directory laid out like a checkout. The only change: the placeholder
    `export SQUEEZE_URL=… SQUEEZE_API_KEY=sqz_...` lines are dropped, the test's environment has both."""
    curl = readme_block("sh", "curl -sf")
    cli = readme_block("sh", "squeeze models upload")
    for name in (".venv", "bench"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "SQUEEZE_URL": embedded.url, "SQUEEZE_API_KEY": embedded.api_key}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)  # as a new shell has it
    outputs = {}
    for name, block in (("curl", curl), ("cli", cli)):
        script = "\n".join(line for line in block.splitlines() if not line.startswith("export SQUEEZE_URL="))
        assert "sqz_..." not in script, f"the {name} example has a placeholder left"
        out = run_example(["bash", "-euo", "pipefail", "-c", script], embedded, cwd=tmp_path, env=env, timeout=600)
        assert out.returncode == 0, (name, out.stdout[-2000:], out.stderr[-3000:])
        outputs[name] = out.stdout
    # curl: the job's events ended with its final status; its summary and its artifact are there
    assert "event: status" in outputs["curl"] and '"status": "succeeded"' in outputs["curl"], outputs["curl"][-2000:]
    downloaded = [p for p in tmp_path.iterdir() if p.suffix in (".pt2", ".onnx")]
    assert downloaded and downloaded[0].stat().st_size > 0, list(tmp_path.iterdir())
    # the CLI: a table row for the upload, the job's verdict, the listed job, the verified download
    assert re.search(r"^mdl_\w+\s+ready\s+pt2", outputs["cli"], re.M), outputs["cli"]
    assert "(verified)" in outputs["cli"] and "quantize" in outputs["cli"]
    assert any(p.suffix == ".pt2" for p in (tmp_path / "out").iterdir() if p.name != "digits.pt2")


def test_a_killed_worker_is_started_again(embedded, cnn_pt2):
    import os
    import signal
    import time

    import psutil

    def workers() -> list[psutil.Process]:
        found = []
        for p in psutil.Process(embedded.api.pid).children():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "workers.main" in " ".join(p.cmdline()):
                    found.append(p)
            except psutil.Error:  # gone, or a zombie not yet reaped
                pass
        return found

    [first] = workers()
    os.kill(first.pid, signal.SIGKILL)  # what an OOM killer or a careless operator does
    deadline, again = time.monotonic() + 60, []
    while time.monotonic() < deadline and not again:
        again = [p for p in workers() if p.pid != first.pid]
        time.sleep(0.5)
    assert again, embedded.api_log.read_text()[-2000:]
    assert "the worker exited (-9); starting it again" in embedded.api_log.read_text()
    with embedded.client() as c:
        deadline = time.monotonic() + 90
        while c.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(1)
        model = wait_ready(c, "models", upload(c, "models", cnn_pt2, name="after-restart").json()["id"])
        assert model["status"] == "ready"  # the new worker inspects uploads
