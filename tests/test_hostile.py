"""A hostile tenant against the real service, on PostgreSQL + Redis + S3 and on the embedded default: every
crafted upload either is refused before it is read or runs in a sandbox where it finds nothing to steal,
nowhere to write and no time to waste, and the worker then runs an ordinary job."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import hostile
from tests.stack import S3Server, Stack, create_pg_database, drop_pg_database, pg_url, redis_db_url, upload, wait_job
from tests.stack import wait_ready as wait_inspected

KEY = "sqz_hostile_test_key"
CANARY = f"CANARY-{uuid.uuid4().hex}"  # in the worker's environment and in a file beside its store
LIMITS = {
    "SQUEEZE_BOOTSTRAP_API_KEY": KEY,
    "SQUEEZE_INSPECT_TIME_LIMIT_S": "15",
    "SQUEEZE_SANDBOX_DISK_MB": "64",
    "SQUEEZE_CANARY_SECRET": CANARY,
}


@pytest.fixture(scope="module", params=["postgres", "embedded"])
def stack(request, tmp_path_factory):
    home = tmp_path_factory.mktemp(f"hostile-{request.param}")
    cleanup = []
    if request.param == "postgres":
        database, s3 = create_pg_database(), S3Server(home)
        cleanup += [s3.stop, lambda: drop_pg_database(database)]
        env = {**s3.env, "SQUEEZE_DATABASE_URL": pg_url(database), "SQUEEZE_BROKER_URL": redis_db_url(13)}
    else:
        env = {}
    s = Stack(home, {**env, **LIMITS, "AWS_SESSION_TOKEN": CANARY}, api_key=KEY)
    if request.param == "embedded":
        for key in ("SQUEEZE_DATABASE_URL", "SQUEEZE_BROKER_URL", "SQUEEZE_BLOB_DIR"):
            s.env.pop(key, None)
    (home / "secret.txt").write_text(CANARY * 4)
    try:
        s.start_api()
        s.start_worker("w1")
        yield s
    finally:
        s.stop()
        for step in cleanup:
            step()


def _artifact_bytes(client, job: dict) -> bytes:
    return b"".join(client.get(f"/v1/artifacts/{a['id']}/download").content for a in job["artifacts"])


def test_the_crafted_pt2_payloads_are_real(tmp_path):
    """Without the archive check, torch.export.load itself runs the payload (here, in a throwaway process)."""
    marker = tmp_path / "ran"
    path = hostile.pt2_pickled_constant(tmp_path / "evil.pt2", marker)
    code = f"import torch; torch.export.load({str(path)!r})"
    subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert marker.exists()


def test_pt2_archives_that_would_unpickle_or_run_code_are_refused_by_their_inspection(stack, tmp_path):
    """What the members of a .pt2 hold is read in the sandboxed inspection, bounded, never in the API process
    (a crafted 67 KB archive once cost the API 42 s of CPU there): the upload is stored, its inspection
    refuses it with the reason, and nothing of it ever runs."""
    marker = tmp_path / "ran"
    crafted = {
        "constant stored with pickle": hostile.pt2_pickled_constant(tmp_path / "constant.pt2", marker),
        "sample inputs that unpickle": hostile.pt2_pickled_sample_inputs(tmp_path / "inputs.pt2", marker),
        "compiled code": hostile.pt2_compiled_code(tmp_path / "compiled.pt2"),
    }
    with stack.client() as c:
        for what, path in crafted.items():
            r = upload(c, "models", path)
            assert r.status_code == 201, (what, r.text)
            model = wait_inspected(c, "models", r.json()["id"])
            assert model["status"] == "invalid" and model["info"] is None, (what, model)
            error = model["error"]
            assert error["code"] == "pickle_refused" and "cannot be loaded safely" in error["message"], what
            assert str(tmp_path) not in error["message"] and str(stack.home) not in error["message"]
    assert not marker.exists()


def test_torchscript_that_reads_the_store_finds_nothing(stack, tmp_path):
    store = stack.home / ("squeeze.db" if (stack.home / "squeeze.db").exists() else "secret.txt")
    targets = [store, stack.home / "secret.txt", Path("/etc/hostname")]
    with stack.client() as c:
        for target in targets:
            path = hostile.torchscript_reads(tmp_path / f"reads-{target.name}.pt", target, 16)
            model = wait_inspected(c, "models", upload(c, "models", path, input_shape=[1, 4]).json()["id"])
            # the file does not exist in the sandbox: torch.jit.load fails inside it, the upload is invalid
            assert model["status"] == "invalid", model
            assert "No such file" in model["error"]["message"] or "does not exist" in model["error"]["message"]
            assert CANARY not in str(model)


def test_torchscript_that_writes_outside_leaves_nothing(stack, tmp_path):
    outside = [tmp_path / "escaped.bin", stack.home / "escaped.bin", Path(f"/tmp/squeeze-escaped-{uuid.uuid4().hex}")]
    with stack.client() as c:
        for target in outside:
            path = hostile.torchscript_writes(tmp_path / f"writes-{target.parent.name}.pt", target)
            model = wait_inspected(c, "models", upload(c, "models", path, input_shape=[1, 4]).json()["id"])
            assert not target.exists(), target
            if model["status"] == "ready":  # it wrote into the sandbox's own /tmp: gone with the sandbox
                job = c.post(
                    "/v1/jobs",
                    json={"model_id": model["id"], "recipe": {"steps": [{"method": "quantize", "scheme": "fp16"}]}},
                ).json()
                done = wait_job(c, job["id"])
                assert CANARY.encode() not in _artifact_bytes(c, done)
                assert not target.exists()


def test_a_model_that_never_returns_is_stopped(stack, tmp_path):
    with stack.client() as c:
        path = hostile.torchscript_loops(tmp_path / "loops.pt")
        model = wait_inspected(c, "models", upload(c, "models", path, input_shape=[1, 4]).json()["id"])
    assert model["status"] == "invalid" and model["error"]["code"] == "timeout", model


def test_onnx_external_data_outside_the_upload_is_refused(stack, tmp_path):
    with stack.client() as c:
        path = hostile.onnx_external_data(tmp_path / "steal.onnx", stack.home / "secret.txt")
        r = upload(c, "models", path)
        model = wait_inspected(c, "models", r.json()["id"]) if r.status_code == 201 else r.json()
    assert model.get("status") != "ready", model
    assert CANARY not in str(model)


def test_after_all_that_an_ordinary_job_runs_in_the_sandbox(stack, cnn_pt2, digits_npz):
    with stack.client() as c:
        model = wait_inspected(c, "models", upload(c, "models", cnn_pt2).json()["id"])
        data = wait_inspected(c, "datasets", upload(c, "datasets", digits_npz).json()["id"])
        assert model["status"] == "ready" and model["info"]["isolation"]["mode"] == "bwrap"
        job = c.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "dataset_id": data["id"],
                "recipe": {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
            },
        ).json()
        done = wait_job(c, job["id"])
        assert done["status"] == "succeeded", done
        assert done["results"]["isolation"]["mode"] == "bwrap"
        assert any("network" in layer for layer in done["results"]["isolation"]["layers"])
        body = _artifact_bytes(c, done)
        assert CANARY.encode() not in body and KEY.encode() not in body
        ready = c.get("/readyz").json()
        assert {w["isolation"]["mode"] for w in ready["workers"]} == {"bwrap"}, ready  # both lanes: jobs, inspections
    leftovers = list((stack.home / "work").rglob("*")) if (stack.home / "work").exists() else []
    assert not [p for p in leftovers if p.is_file()], leftovers  # every job's folder is removed
    assert os.environ.get("SQUEEZE_CANARY_SECRET") != CANARY  # the canary lived only in the service's env


def test_a_pt2_whose_members_do_not_inflate_is_a_bad_upload_not_a_crash(tmp_path):
    import zipfile

    from workers.compression import UnsupportedFormatError, load_model
    from workers.compression.contract.sniff import detect_format

    plain = hostile._plain_pt2(tmp_path / "plain.pt2")
    broken = tmp_path / "broken.pt2"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            deflate = name.endswith("config.json")
            dst.writestr(name, src.read(name), compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
    raw = bytearray(broken.read_bytes())
    at = raw.find(b"model_weights_config.json") + 40  # inside that member's deflated bytes
    raw[at : at + 20] = b"\xff" * 20
    broken.write_bytes(raw)
    # the API reads only the archive's structure, which is sound: the members are inflated in the sandbox
    assert detect_format(broken) == "pt2"
    with pytest.raises(UnsupportedFormatError) as e:
        load_model(broken)
    assert e.value.code == "corrupt_archive" and str(tmp_path) not in e.value.message
