"""The Python SDK and the `squeeze` CLI against the real service (PostgreSQL, Redis, a worker): upload,
submit, wait, download with its checksum; retries that cannot duplicate a job; typed errors; exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest
from squeeze_client import (
    PRESETS,
    Artifact,
    ChecksumMismatch,
    Client,
    ConnectionFailed,
    InvalidRequest,
    JobFailed,
    NotFound,
    Unauthorized,
)

from tests.conftest import PROD_KEY
from tests.stack import sha256_of
from workers.compression import load_model

# passes submission, fails on the worker: torchvision's resnet18 takes 3-channel images, the digits 1
FAILS_ON_WORKER = {"steps": [{"method": "distill", "student": {"arch": "resnet18", "kwargs": {"num_classes": 10}}}]}


class Flaky(httpx.BaseTransport):
    """Forwards to the server, but fails some calls first: `drop` loses the response of a request the
    server did process (a timeout after sending), `unavailable` answers 503 without forwarding."""

    def __init__(self, drop: set[str] = frozenset(), unavailable: int = 0, corrupt: bool = False):
        self.inner = httpx.HTTPTransport()
        self.drop, self.unavailable, self.corrupt = set(drop), unavailable, corrupt
        self.calls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        self.calls.append(key)
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"error": {"code": "queue_unavailable", "message": "try again"}})
        response = self.inner.handle_request(request)
        if key in self.drop:
            self.drop.discard(key)
            response.read()
            raise httpx.ReadTimeout("the response was lost", request=request)
        if self.corrupt and request.url.path.endswith("/download"):
            body = bytearray(response.read())
            body[0] ^= 0xFF
            return httpx.Response(response.status_code, headers=response.headers, content=bytes(body))
        return response


@pytest.fixture(scope="module")
def uploaded(prod_stack, cnn_pt2, digits_npz):
    with Client(prod_stack.url, PROD_KEY) as c:
        model, dataset = c.upload_model(cnn_pt2, name="sdk-cnn"), c.upload_dataset(digits_npz, name="sdk-digits")
    assert model.status == "ready" and dataset.status == "ready"
    return model.id, dataset.id


def test_sdk_upload_submit_wait_download(prod_stack, uploaded, tmp_path, digits_npz):
    model, dataset = uploaded
    with Client(prod_stack.url, PROD_KEY) as c:
        job = c.submit(model, PRESETS["int8"], dataset=dataset, device="cpu", name="sdk")
        assert job.status == "queued"
        job.wait(timeout=300, progress=True)
        assert job.status == "succeeded" and job.results["final"]["size_ratio"] > 1
        speed = job.speedup  # the final speedups with their 95 % intervals
        lo, hi = speed.ci95["b1"]
        assert lo <= speed.b1 <= hi and f"{speed.b1:.2f}x [{lo:.2f}-{hi:.2f}]" in str(speed)
        [artifact] = job.artifacts
        path = artifact.download(tmp_path, progress=True)
    assert sha256_of(path.read_bytes()) == artifact.sha256
    assert load_model(path).module is not None
    assert not list(tmp_path.glob("*.part"))


def test_a_retried_submit_creates_one_job(prod_stack, uploaded):
    model, dataset = uploaded
    flaky = Flaky(drop={"POST /v1/jobs"})
    with Client(prod_stack.url, PROD_KEY, transport=flaky, backoff=0.01) as c:
        before = {j.id for j in c.jobs(limit=200)}
        job = c.submit(model, PRESETS["fp16"], dataset=dataset, device="cpu")
        after = {j.id for j in c.jobs(limit=200)}
    assert flaky.calls.count("POST /v1/jobs") == 2  # the lost response was retried ...
    assert after - before == {job.id}  # ... with the same Idempotency-Key: one job


def test_retries_503_but_never_4xx(prod_stack):
    flaky = Flaky(unavailable=2)
    with Client(prod_stack.url, PROD_KEY, transport=flaky, backoff=0.01) as c:
        assert c.methods()
        assert flaky.calls.count("GET /v1/methods") == 3
        with pytest.raises(NotFound) as e:
            c.job("job_does_not_exist")
        assert e.value.code == "not_found" and e.value.status == 404
        assert flaky.calls.count("GET /v1/jobs/job_does_not_exist") == 1
    with Client(prod_stack.url, "sqz_wrong") as c, pytest.raises(Unauthorized) as e:
        list(c.jobs())
    assert e.value.code == "unauthorized"
    with Client("http://127.0.0.1:9", PROD_KEY, retries=1, backoff=0.01) as c, pytest.raises(ConnectionFailed):
        c.methods()


def test_typed_errors_carry_the_server_code(prod_stack, uploaded, tmp_path):
    model, dataset = uploaded
    with Client(prod_stack.url, PROD_KEY) as c:
        with pytest.raises(InvalidRequest) as e:
            c.submit(model, {"steps": [{"method": "quantize", "scheme": "int3"}]})
        assert e.value.code == "invalid_recipe" and e.value.status == 422
        job = c.submit(model, FAILS_ON_WORKER, dataset=dataset, device="cpu")
        with pytest.raises(JobFailed) as e:
            job.wait(timeout=300)
        assert e.value.job.status == "failed" and e.value.code == "invalid_recipe"
        assert "does not run on the teacher's input" in e.value.message


def test_download_checksum_mismatch_is_caught(prod_stack, uploaded, tmp_path):
    model, dataset = uploaded
    with Client(prod_stack.url, PROD_KEY) as c:
        job = c.submit(model, PRESETS["fp16"], dataset=dataset, device="cpu").wait(timeout=300)
        artifact_id = job.artifacts[0].id
    with Client(prod_stack.url, PROD_KEY, transport=Flaky(corrupt=True)) as c:
        with pytest.raises(ChecksumMismatch):
            c.artifact(artifact_id).download(tmp_path / "bad.pt2")
    assert not (tmp_path / "bad.pt2").exists() and not list(tmp_path.glob("*.part"))


def squeeze(prod_stack, *args, key=PROD_KEY, cwd=None):
    env = {**os.environ, "SQUEEZE_URL": prod_stack.url}
    env.pop("SQUEEZE_API_KEY", None)
    if key:
        env["SQUEEZE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "squeeze_client.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def test_cli_end_to_end(prod_stack, cnn_pt2, digits_npz, tmp_path):
    up = squeeze(prod_stack, "--json", "models", "upload", str(cnn_pt2), "--name", "cli-cnn")
    assert up.returncode == 0, up.stderr
    model = json.loads(up.stdout)
    assert model["status"] == "ready"
    data = json.loads(squeeze(prod_stack, "--json", "datasets", "upload", str(digits_npz)).stdout)
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(PRESETS["int8"]))
    run = squeeze(
        prod_stack,
        "jobs",
        "submit",
        "--model",
        model["id"],
        "--recipe",
        str(recipe),
        "--dataset",
        data["id"],
        "--device",
        "cpu",
        "--wait",
    )
    assert run.returncode == 0, run.stderr
    assert "succeeded" in run.stdout and "baseline" in run.stdout and "artifact" in run.stdout
    assert "speedup b1 / bN [95 %]" in run.stdout and re.search(r"\d\.\d\dx \[\d+\.\d\d-\d+\.\d\d\]", run.stdout)
    job_id = run.stdout.split()[1]
    job = json.loads(squeeze(prod_stack, "--json", "jobs", "show", job_id).stdout)
    artifact = job["artifacts"][0]
    got = squeeze(prod_stack, "artifacts", "download", artifact["id"], "-o", str(tmp_path))
    assert got.returncode == 0 and "verified" in got.stdout, got.stderr
    assert sha256_of((tmp_path / artifact["filename"]).read_bytes()) == artifact["sha256"]
    listed = squeeze(prod_stack, "jobs", "list", "--status", "succeeded")
    assert listed.returncode == 0 and job_id in listed.stdout
    methods = squeeze(prod_stack, "methods")
    assert methods.returncode == 0 and "prune" in methods.stdout and "distill" in methods.stdout
    preset = squeeze(prod_stack, "--json", "jobs", "submit", "--model", model["id"], "--preset", "fp16", "--wait")
    assert preset.returncode == 0 and json.loads(preset.stdout)["status"] == "succeeded"


def test_cli_exit_codes_and_messages(prod_stack, uploaded, tmp_path):
    model, dataset = uploaded
    missing_key = squeeze(prod_stack, "jobs", "list", key=None)
    assert missing_key.returncode == 2 and "SQUEEZE_API_KEY" in missing_key.stderr
    unknown = squeeze(prod_stack, "jobs", "show", "job_nope")
    assert unknown.returncode == 3 and "error (not_found)" in unknown.stderr and "job_nope" in unknown.stderr
    bad_key = squeeze(prod_stack, "jobs", "list", key="sqz_wrong")
    assert bad_key.returncode == 3 and "unauthorized" in bad_key.stderr
    recipe = tmp_path / "fails.json"
    recipe.write_text(json.dumps(FAILS_ON_WORKER))
    failed = squeeze(
        prod_stack, "jobs", "submit", "--model", model, "--dataset", dataset, "--recipe", str(recipe), "--wait"
    )
    assert failed.returncode == 1, failed.stderr
    assert "error (invalid_recipe)" in failed.stderr and "does not run on the teacher's input" in failed.stderr
    refused = squeeze(prod_stack, "jobs", "submit", "--model", model, "--preset", "prune50")
    assert refused.returncode == 3 and "needs a dataset" in refused.stderr


# ---------------------------------------------------------------- without the service: httpx.MockTransport


def _form_fields(request: httpx.Request) -> dict[str, str]:
    """The text fields of a multipart/form-data request (the file part left out)."""
    import email

    message = email.message_from_bytes(
        b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.read()
    )
    fields = {}
    for part in message.get_payload():
        if part.get_param("filename", header="content-disposition") is None:
            fields[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True).decode()
    return fields


def _recording_models_endpoint(seen: list[dict[str, str]]):
    def handler(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/models")
        seen.append(_form_fields(request))
        return httpx.Response(201, json={"id": "mdl_1", "status": "pending", "format": "safetensors", "name": "w"})

    return handler


def test_upload_model_sends_arch_and_arch_kwargs_as_form_fields(tmp_path):
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\0" * 64)
    seen: list[dict[str, str]] = []
    with Client("http://squeeze.test", PROD_KEY, transport=httpx.MockTransport(_recording_models_endpoint(seen))) as c:
        model = c.upload_model(weights, name="w", arch="resnet18", arch_kwargs={"num_classes": 10}, wait=False)
        c.upload_model(weights, wait=False)
    assert model.id == "mdl_1" and model.status == "pending"
    with_arch, without = seen
    assert with_arch == {"name": "w", "arch": "resnet18", "arch_kwargs": '{"num_classes": 10}'}
    assert json.loads(with_arch["arch_kwargs"]) == {"num_classes": 10}
    assert without == {}  # nothing sent for options not given


class _BreaksMidStream(httpx.SyncByteStream):
    def __init__(self, head: bytes):
        self.head = head

    def __iter__(self):
        yield self.head
        raise httpx.ReadError("the connection was reset mid-stream")


def test_download_retries_a_503_and_a_broken_stream_through_the_shared_helper(tmp_path, monkeypatch):
    import hashlib

    payload = bytes(range(256)) * 1024
    answers = [
        httpx.Response(503, headers={"Retry-After": "2"}, json={"error": {"code": "unavailable", "message": "later"}}),
        httpx.Response(200, stream=_BreaksMidStream(payload[:1000])),
        httpx.Response(200, content=payload),
    ]
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        return answers.pop(0)

    sleeps: list[tuple[int, str | None]] = []
    monkeypatch.setattr(Client, "_sleep", lambda self, attempt, retry_after: sleeps.append((attempt, retry_after)))
    helper, used = Client._with_retries, []

    def spy(self, attempt, *, failure):
        used.append(failure)
        return helper(self, attempt, failure=failure)

    monkeypatch.setattr(Client, "_with_retries", spy)
    artifact = {"id": "art_1", "filename": "model.pt2", "sha256": hashlib.sha256(payload).hexdigest()}
    with Client("http://squeeze.test", PROD_KEY, transport=httpx.MockTransport(handler)) as c:
        path = Artifact(c, artifact).download(tmp_path)
    assert path == tmp_path / "model.pt2" and path.read_bytes() == payload
    assert not list(tmp_path.glob("*.part"))
    assert calls == ["GET /v1/artifacts/art_1/download"] * 3
    assert used == ["download of art_1 failed"]  # one pass through the helper, which retried twice
    assert sleeps == [(0, "2"), (1, None)]  # the 503's Retry-After is honoured, as for any request


def test_download_never_retries_4xx_and_gives_up_after_the_retries(tmp_path, monkeypatch):
    monkeypatch.setattr(Client, "_sleep", lambda self, attempt, retry_after: None)
    calls: list[int] = []

    def not_found(request: httpx.Request) -> httpx.Response:
        calls.append(404)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no artifact art_1"}})

    artifact = {"id": "art_1", "filename": "model.pt2", "sha256": "0" * 64}
    with Client("http://squeeze.test", PROD_KEY, transport=httpx.MockTransport(not_found)) as c:
        with pytest.raises(NotFound) as e:
            Artifact(c, artifact).download(tmp_path)
    assert e.value.code == "not_found" and calls == [404]

    def unreachable(request: httpx.Request) -> httpx.Response:
        calls.append(0)
        raise httpx.ConnectError("connection refused", request=request)

    with Client("http://squeeze.test", PROD_KEY, retries=2, transport=httpx.MockTransport(unreachable)) as c:
        with pytest.raises(ConnectionFailed) as e:
            Artifact(c, artifact).download(tmp_path)
    assert "download of art_1 failed" in e.value.message and calls == [404, 0, 0, 0]


def test_cli_models_upload_passes_arch_and_arch_kwargs(tmp_path, monkeypatch, capsys):
    from squeeze_client import cli

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"\0" * 64)
    seen: list[dict[str, str]] = []
    transport = httpx.MockTransport(_recording_models_endpoint(seen))
    monkeypatch.setattr(cli, "Client", lambda url, key: Client(url, key, transport=transport))
    base = ["--url", "http://squeeze.test", "--api-key", PROD_KEY, "--json", "models", "upload", str(weights)]
    code = cli.main([*base, "--arch", "timm:resnet18", "--arch-kwargs", '{"num_classes": 10}', "--no-wait"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["id"] == "mdl_1"
    assert seen == [{"arch": "timm:resnet18", "arch_kwargs": '{"num_classes": 10}'}]
    code = cli.main([*base, "--arch", "resnet18", "--arch-kwargs", "[10]", "--no-wait"])
    assert code == 2 and "--arch-kwargs" in capsys.readouterr().err
    assert len(seen) == 1  # refused before anything was sent
