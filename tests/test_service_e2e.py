"""End to end on PostgreSQL + Redis + a real Celery worker process: upload, submit, poll, download,
and the artifact loads and runs; SSE; a signed webhook with retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import torch

from tests.stack import sha256_of, wait_job
from workers.compression import load_model

INT8 = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}
ONNX = {"steps": [{"method": "export", "format": "onnx"}]}


def submit(client, model, dataset, recipe, **extra):
    r = client.post(
        "/v1/jobs",
        json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": recipe, "device": "cpu", **extra},
    )
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def check_artifact_runs(client, artifact, tmp_path, digits_npz, min_accuracy=0.8):
    r = client.get(artifact["download_url"])
    assert r.status_code == 200
    assert sha256_of(r.content) == artifact["sha256"] == r.headers["x-content-sha256"]
    assert len(r.content) == artifact["size_bytes"]
    path = tmp_path / artifact["filename"]
    path.write_bytes(r.content)
    loaded = load_model(path)
    x = torch.from_numpy(np.load(digits_npz)["x"][:16])
    y = np.load(digits_npz)["y"][:16]
    with torch.inference_mode():
        out = loaded.module(x)
    assert out.shape == (16, 10)
    assert (out.argmax(1).numpy() == y).mean() > min_accuracy


def test_quantize_then_export_end_to_end(prod_stack, ready_digits, tmp_path, digits_npz):
    model, dataset = ready_digits
    assert model["info"]["params"] > 0 and model["info"]["input"]["shape"] == [None, 1, 8, 8]
    with prod_stack.client() as c:
        jobs = [submit(c, model, dataset, INT8), submit(c, model, dataset, ONNX)]
        for job, fmt in zip(jobs, ("pt2", "onnx")):
            done = wait_job(c, job["id"])
            assert done["status"] == "succeeded", done["error"]
            assert done["progress"] == 1.0 and done["attempts"] == 1 and done["device_used"] == "cpu"
            results = done["results"]
            baseline, step = results["baseline"], results["steps"][0]
            for m in (baseline, step["measurement"]):
                assert m["size_bytes"] > 0 and m["params"] > 0 and m["accuracy"] > 0.9
                assert m["latency_ms"]["b1"]["p50"] > 0 and m["latency_ms"]["bN"]["p50"] > 0
            [artifact] = done["artifacts"]
            assert artifact["format"] == fmt and artifact["source_model_id"] == model["id"]
            assert results["final"]["artifact_id"] == step["artifact_id"] == artifact["id"]
            assert artifact["toolchain"].get("torch")
            meta = c.get(f"/v1/artifacts/{artifact['id']}").json()
            assert meta["measurement"]["size_bytes"] == step["measurement"]["size_bytes"]
            check_artifact_runs(c, artifact, tmp_path, digits_npz)
        # int8 weights really are smaller than the fp32 baseline
        int8 = c.get(f"/v1/jobs/{jobs[0]['id']}").json()["results"]
        assert int8["final"]["size_ratio"] > 1.2
        listed = c.get("/v1/jobs", params={"status": "succeeded"}).json()["items"]
        assert {j["id"] for j in jobs} <= {j["id"] for j in listed}


def test_int8_static_stores_every_runtime_and_names_the_recommended_one(prod_stack, ready_digits, tmp_path, digits_npz):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        done = wait_job(
            c, submit(c, model, dataset, {"steps": [{"method": "quantize", "scheme": "int8_static"}]})["id"]
        )
        assert done["status"] == "succeeded", done["error"]
        step = done["results"]["steps"][0]
        artifacts = {a["id"]: a for a in done["artifacts"]}
        assert {a["format"] for a in artifacts.values()} == {"pt2", "onnx", "openvino"}
        assert {r["artifact_id"] for r in step["runtimes"]} == set(artifacts)
        assert {r["measurement"]["runtime"] for r in step["runtimes"]} == {"inductor", "onnxruntime", "openvino"}
        [recommended] = [r for r in step["runtimes"] if r["recommended"]]
        assert step["recommended"] == step["artifact_id"] == recommended["artifact_id"]
        assert done["results"]["final"]["artifact_id"] == step["artifact_id"]
        for artifact in artifacts.values():
            check_artifact_runs(c, artifact, tmp_path, digits_npz)
            check_how_to_run(artifact, tmp_path, digits_npz)
    # the kernels inductor compiled are kept for the tenant's next job (workers/compile_cache.py)
    assert list((prod_stack.home / "cache" / "tenants").glob("ten_*/inductor/*/*.so"))


def check_how_to_run(artifact, tmp_path, digits_npz):
    """The lines shown next to the download run as they stand, in a fresh Python, on the downloaded file."""
    import subprocess
    import sys

    snippet = artifact["how_to_run"]
    assert artifact["filename"] in snippet, snippet
    x = "np.load('digits.npz')['x'][:16]"
    prelude = f"import numpy as np, torch\nx = {x}\nx = x if 'onnxruntime' in {snippet!r} or 'openvino' in {snippet!r} else torch.from_numpy(x)\n"
    check = "\nassert np.asarray(y).shape == (16, 10), np.asarray(y).shape\nprint('ran')\n"
    (tmp_path / "digits.npz").write_bytes(digits_npz.read_bytes())
    run = subprocess.run([sys.executable, "-c", prelude + snippet + check], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "ran" in run.stdout, (snippet, run.stderr[-2000:])


def test_a_guard_that_cannot_hold_fails_the_job_and_keeps_the_best_candidate(prod_stack, digits, tmp_path):
    from tests.stack import upload, wait_ready

    from .conftest import export_pt2
    from .digits import train

    x, y, _, _ = digits
    linear = train(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x, y, epochs=5)
    path = export_pt2(linear, tmp_path / "linear.pt2", torch.zeros(2, 1, 8, 8))
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x=x)
    recipe = {
        "steps": [{"method": "quantize", "scheme": "binary", "keep_first_last": False, "max_accuracy_drop": 1e-4}]
    }
    with prod_stack.client() as c:
        model = wait_ready(c, "models", upload(c, "models", path).json()["id"])
        dataset = wait_ready(c, "datasets", upload(c, "datasets", unlabelled).json()["id"])
        done = wait_job(c, submit(c, model, dataset, recipe)["id"])
        assert done["status"] == "failed"
        assert done["error"]["code"] == "step_failed"
        assert "cannot meet max_accuracy_drop 0.0001" in done["error"]["message"]
        [artifact] = done["artifacts"]  # the best candidate, stored and downloadable
        assert done["results"]["steps"][0]["artifact_id"] == artifact["id"]
        assert done["results"]["steps"][0]["details"]["guard"]["met"] is False
        r = c.get(artifact["download_url"])
        assert r.status_code == 200 and sha256_of(r.content) == artifact["sha256"]


def test_prune_then_quantize_pipeline_end_to_end(prod_stack, ready_digits, tmp_path, digits_npz):
    model, dataset = ready_digits
    assert [layer["name"] for layer in model["info"]["layers"]] == ["features.0", "features.3", "head.1", "head.3"]
    recipe = {
        "steps": [
            {"method": "prune", "kind": "structured", "sparsity": 0.4, "criterion": "taylor", "finetune_epochs": 3},
            {"method": "quantize", "scheme": "int8_dynamic"},
        ]
    }
    with prod_stack.client() as c:
        done = wait_job(c, submit(c, model, dataset, recipe)["id"])
        assert done["status"] == "succeeded", done["error"]
        results = done["results"]
        pruned, quantized = results["steps"]
        assert pruned["details"]["params_after"] < pruned["details"]["params_before"]
        assert pruned["measurement"]["macs"] < results["baseline"]["macs"]
        assert results["eval_data"]["held_out_fraction"] == 0.2  # the pruned model trained on the rest
        assert [a["format"] for a in done["artifacts"]] == ["pt2", "pt2"]
        assert results["final"]["artifact_id"] == quantized["artifact_id"] == done["artifacts"][1]["id"]
        for artifact in done["artifacts"]:
            check_artifact_runs(c, artifact, tmp_path, digits_npz)
    # training reports every epoch as a stage of the job
    stages = [
        row[0]["stage"]
        for row in prod_stack.sql(
            "SELECT data FROM job_events WHERE job_id = %s AND kind = 'stage' ORDER BY id", done["id"]
        )
    ]
    assert any("fine-tuning epoch 3/3" in s for s in stages), stages


def test_distil_into_an_uploaded_student_end_to_end(prod_stack, ready_digits, tmp_path, digits_npz):
    from tests.conftest import export_pt2
    from tests.digits import DigitsCNN
    from tests.stack import upload, wait_ready

    model, dataset = ready_digits
    torch.manual_seed(0)
    student_path = export_pt2(DigitsCNN(width=4).eval(), tmp_path / "student.pt2", torch.zeros(2, 1, 8, 8))
    recipe = {"steps": [{"method": "distill", "student": {"model_id": None}, "epochs": 15, "learning_rate": 3e-3}]}
    with prod_stack.client() as c:
        student = wait_ready(c, "models", upload(c, "models", student_path).json()["id"])
        recipe["steps"][0]["student"]["model_id"] = student["id"]
        done = wait_job(c, submit(c, model, dataset, recipe)["id"])
        assert done["status"] == "succeeded", done["error"]
        step = done["results"]["steps"][0]
        assert step["measurement"]["params"] == student["info"]["params"]
        assert step["details"]["history"][-1]["loss"] < step["details"]["history"][0]["loss"]
        assert step["measurement"]["accuracy"] > 0.5
        check_artifact_runs(c, done["artifacts"][0], tmp_path, digits_npz, min_accuracy=0.5)


def test_measurements_are_stored_as_rows(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = wait_job(c, submit(c, model, dataset, ONNX)["id"])
    rows = prod_stack.sql(
        "SELECT role, step_index, artifact_id, size_bytes FROM measurements WHERE job_id = %s ORDER BY step_index",
        job["id"],
    )
    assert [(r[0], r[1]) for r in rows] == [("baseline", 0), ("step", 1)]
    assert (
        rows[1][2] == job["artifacts"][0]["id"]
        and rows[1][3] == job["results"]["steps"][0]["measurement"]["size_bytes"]
    )


def test_events_stream_ends_with_the_final_status(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = submit(c, model, dataset, INT8)
        events = []
        with c.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=300) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in r.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
    kinds = [k for k, _ in events]
    assert kinds[0] == "status" and events[0][1]["status"] == "queued"
    assert "stage" in kinds
    assert events[-1] == ("status", events[-1][1]) and events[-1][1]["status"] == "succeeded"
    stages = [d["stage"] for k, d in events if k == "stage"]
    assert any("measuring" in s for s in stages), stages


class _Receiver(BaseHTTPRequestHandler):
    deliveries: list = []
    fail_first = 1

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).deliveries.append((dict(self.headers), body))
        status = 500 if len(type(self).deliveries) <= type(self).fail_first else 200
        self.send_response(status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_is_signed_retried_and_recorded(prod_stack, ready_digits):
    model, dataset = ready_digits
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with prod_stack.client() as c:
            job = submit(c, model, dataset, ONNX, callback_url=f"http://127.0.0.1:{server.server_port}/hook")
            assert wait_job(c, job["id"])["status"] == "succeeded"
        import time

        deadline = time.monotonic() + 60
        while len(_Receiver.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        server.shutdown()
    assert len(_Receiver.deliveries) == 2  # the first answer was a 500: retried once with back-off
    secret = prod_stack.admin("webhook-secret", "--tenant", "default")
    for headers, body in _Receiver.deliveries:
        expected = hmac.new(
            secret.encode(), headers["X-Squeeze-Timestamp"].encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        assert headers["X-Squeeze-Signature"] == f"sha256={expected}"
        payload = json.loads(body)
        assert payload["job"]["id"] == job["id"] and payload["job"]["status"] == "succeeded"
    rows = prod_stack.sql(
        "SELECT attempt, status_code, delivered FROM webhook_deliveries WHERE job_id = %s ORDER BY attempt", job["id"]
    )
    assert rows == [(1, 500, False), (2, 200, True)]
