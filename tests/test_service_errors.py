"""Bad input against the running service: each answer is the right 4xx with a JSON error body, never a
500, and a refused upload leaves nothing behind."""

from __future__ import annotations

import json
import os
import pickle
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.digits import DigitsMLP
from tests.stack import upload, wait_job, wait_ready
from workers.compression import save_model
from workers.compression.formats import InputSpec


def error_of(response: httpx.Response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code:
        assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]["message"]


def submit_export(client, model) -> dict:
    r = client.post(
        "/v1/jobs", json={"model_id": model["id"], "recipe": {"steps": [{"method": "export", "format": "pt2"}]}}
    )
    assert r.status_code == 202, r.text
    return r.json()


def temp_files(stack) -> list[str]:
    return os.listdir(stack.home / "blobs" / "tmp")


@pytest.fixture(scope="module")
def other_key(prod_stack):
    return prod_stack.admin("create-key", "--tenant", "other")


def test_auth(prod_stack):
    with prod_stack.client(api_key="") as anonymous:
        error_of(anonymous.get("/v1/models"), 401, "unauthorized")
    with prod_stack.client(api_key="sqz_not_a_key") as wrong:
        error_of(wrong.get("/v1/jobs"), 401, "unauthorized")
    with prod_stack.client() as c:
        assert c.get("/v1/models").status_code == 200


def test_other_tenant_ids_are_not_found(prod_stack, ready_digits, other_key):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = submit_export(c, model)
    with prod_stack.client(api_key=other_key) as other:
        error_of(other.get(f"/v1/models/{model['id']}"), 404, "not_found")
        error_of(other.get(f"/v1/datasets/{dataset['id']}"), 404, "not_found")
        error_of(other.get(f"/v1/jobs/{job['id']}"), 404, "not_found")
        error_of(other.post(f"/v1/jobs/{job['id']}/cancel"), 404, "not_found")
        error_of(other.get(f"/v1/jobs/{job['id']}/events"), 404, "not_found")
        error_of(other.delete(f"/v1/models/{model['id']}"), 404, "not_found")
        error_of(other.post("/v1/jobs", json={"model_id": model["id"], "recipe": {"steps": []}}), 404, "not_found")
        assert model["id"] not in {m["id"] for m in other.get("/v1/models").json()["items"]}
    with prod_stack.client() as c:
        done = c.get(f"/v1/jobs/{job['id']}").json()
        assert c.get(f"/v1/models/{model['id']}").status_code == 200
    if done["artifacts"]:
        with prod_stack.client(api_key=other_key) as other:
            error_of(other.get(done["artifacts"][0]["download_url"]), 404, "not_found")


def test_unknown_ids_and_routes(prod_stack):
    with prod_stack.client() as c:
        for path in (
            "/v1/models/mdl_nope",
            "/v1/datasets/dst_nope",
            "/v1/jobs/job_nope",
            "/v1/artifacts/art_nope",
            "/v1/artifacts/art_nope/download",
            "/v1/nothing",
        ):
            error_of(c.get(path), 404, "not_found")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickles_are_refused_and_never_run(prod_stack, tmp_path):
    marker = tmp_path / "pwned"
    Payload.marker = marker
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps(Payload(), protocol=4))
    zipped = tmp_path / "model.pt"  # what torch.save(model) writes: a zip around data.pkl
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("model/data.pkl", pickle.dumps(Payload(), protocol=2))
        zf.writestr("model/version", "3\n")
    with prod_stack.client() as c:
        for path in (raw, zipped):
            message = error_of(upload(c, "models", path), 415, "pickle_refused")
            assert "torch.export" in message and "ONNX" in message  # says what to upload instead
        error_of(upload(c, "datasets", raw), 415, "pickle_refused")
    assert not marker.exists()
    assert temp_files(prod_stack) == []


def test_empty_truncated_and_unknown_files(prod_stack, tmp_path, cnn_pt2):
    empty = tmp_path / "empty.pt2"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(cnn_pt2.read_bytes()[: cnn_pt2.stat().st_size // 2])
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a model")
    with prod_stack.client() as c:
        error_of(upload(c, "models", empty), 400, "empty_file")
        error_of(upload(c, "datasets", empty), 400, "empty_file")
        assert "truncated" in error_of(upload(c, "models", truncated), 400, "corrupt_archive")
        error_of(upload(c, "models", text), 415, "unsupported_format")
        error_of(upload(c, "datasets", text), 415, "unsupported_format")
        error_of(
            c.post("/v1/models", content=b"raw bytes", headers={"Content-Type": "application/octet-stream"}),
            415,
            "unsupported_media_type",
        )
        error_of(c.post("/v1/models", files={"other": ("x", b"123")}), 400, "missing_file")
        error_of(upload(c, "models", cnn_pt2, input_shape="[1, 1,"), 422, "invalid_request")
        error_of(upload(c, "models", cnn_pt2, format="onnx"), 422, "format_mismatch")
    assert temp_files(prod_stack) == []


def test_oversize_uploads_are_cut_off_and_removed(prod_stack, tmp_path):
    limit = int(prod_stack.env["SQUEEZE_MAX_UPLOAD_BYTES"])
    with prod_stack.client() as c:
        big = tmp_path / "big.onnx"
        big.write_bytes(b"\x08\x07\x12" + os.urandom(limit + 1024))
        error_of(upload(c, "models", big), 413, "too_large")  # refused from Content-Length, before reading

        def chunks():  # no Content-Length: the server counts while streaming and stops at the limit
            boundary = b"--b0und4ry"
            yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="big.onnx"\r\n\r\n'
            for _ in range(limit // (1 << 20) + 4):
                yield b"\x08\x07\x12" + bytes(1 << 20)
            yield b"\r\n" + boundary + b"--\r\n"

        try:
            r = c.post(
                "/v1/models", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b0und4ry"}
            )
            error_of(r, 413, "too_large")
        except httpx.TransportError:
            pass  # the server may close the connection while the client is still sending
    assert temp_files(prod_stack) == []


def test_invalid_jobs_are_422_before_queueing(prod_stack, ready_digits, tmp_path, cnn):
    model, dataset = ready_digits
    onnx_path = save_model(cnn, InputSpec(shape=(None, 1, 8, 8)), "onnx", tmp_path / "cnn.onnx")
    with prod_stack.client() as c:
        onnx_model = wait_ready(c, "models", upload(c, "models", onnx_path).json()["id"])
        assert onnx_model["status"] == "ready" and onnx_model["format"] == "onnx"
        before = [j["id"] for j in c.get("/v1/jobs").json()["items"]]  # (an earlier job may still be running)

        def job(recipe, model_id=model["id"], **extra):
            return c.post("/v1/jobs", json={"model_id": model_id, "recipe": recipe, **extra})

        assert "unknown method" in error_of(job({"steps": [{"method": "shrink"}]}), 422, "invalid_recipe")
        error_of(job({"steps": [{"method": "quantize", "scheme": "int3"}]}), 422, "invalid_recipe")
        error_of(job({"steps": []}), 422, "invalid_recipe")
        error_of(job({"stages": []}), 422, "invalid_recipe")
        message = error_of(
            job({"steps": [{"method": "quantize", "scheme": "fp16"}]}, onnx_model["id"]), 422, "invalid_recipe"
        )
        assert "does not accept onnx" in message
        message = error_of(
            job({"steps": [{"method": "quantize", "scheme": "int8_dynamic"}, {"method": "export", "format": "onnx"}]}),
            422,
            "invalid_recipe",
        )
        assert "export first, then quantize" in message
        # quantization: a scheme the format cannot take, a dataset the scheme needs, a layer the model lacks
        message = error_of(job({"steps": [{"method": "quantize", "scheme": "int8_qat"}]}, onnx_model["id"]), 422)
        assert "(quantize int8_qat) does not accept onnx" in message
        message = error_of(job({"steps": [{"method": "quantize", "scheme": "int8_static"}]}), 422, "invalid_recipe")
        assert "calibrates activation ranges on data: add a dataset" in message
        message = error_of(
            job({"steps": [{"method": "quantize", "scheme": "binary", "exclude": ["fc"]}]}), 422, "invalid_recipe"
        )
        assert "'fc' matches no layer" in message and "features.0" in message
        message = error_of(job({"steps": [{"method": "quantize", "scheme": "fp16", "group_size": 32}]}), 422)
        assert "group_size applies to int8_weight_only and int4_weight_only only" in message
        # checked against the layers the worker found when it inspected the model
        message = error_of(
            job({"steps": [{"method": "prune", "kind": "structured", "exclude": ["features.*", "head.1"]}]}),
            422,
            "invalid_recipe",
        )
        assert "nothing is left to prune" in message
        assert "features.0" in error_of(
            job({"steps": [{"method": "prune", "kind": "structured", "exclude": ["fc"]}]}), 422
        )
        message = error_of(job({"steps": [{"method": "prune", "kind": "unstructured", "criterion": "taylor"}]}), 422)
        assert "needs a dataset" in message
        error_of(job({"steps": [{"method": "prune", "kind": "unstructured", "sparsity": 1}]}), 422, "invalid_recipe")
        # a distillation student must exist, belong to the tenant and produce the teacher's output shape
        five = DigitsMLP()
        five.net[-1] = torch.nn.Linear(512, 5)
        five_path = save_model(five.eval(), InputSpec(shape=(None, 1, 8, 8)), "pt2", tmp_path / "five.pt2")
        five_model = wait_ready(c, "models", upload(c, "models", five_path).json()["id"])

        def distill(student_id, **extra):
            step = {"method": "distill", "student": {"model_id": student_id}, **extra}
            return job({"steps": [step]}, dataset_id=dataset["id"])

        assert "does not match the teacher" in error_of(distill(five_model["id"]), 422, "invalid_recipe")
        error_of(distill("mdl_nope"), 404)
        unlabelled = tmp_path / "unlabelled.npz"
        np.savez(unlabelled, x=np.zeros((4, 1, 8, 8), dtype=np.float32))
        plain = wait_ready(c, "datasets", upload(c, "datasets", unlabelled).json()["id"])
        message = error_of(
            job(
                {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "compare_baseline": True}]},
                dataset_id=plain["id"],
            ),
            422,
        )
        assert "needs labels" in message
        message = error_of(job({"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}}]}), 422)
        assert "needs a dataset" in message
        error_of(job({"steps": [{"method": "export", "format": "pt2"}]}, device="tpu"), 422, "invalid_request")
        error_of(job({"steps": [{"method": "export", "format": "pt2"}]}, callback_url="not a url"), 422)
        error_of(job({"steps": [{"method": "export", "format": "pt2"}]}, dataset_id="dst_missing"), 404)
        error_of(
            c.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"}),
            400,
            "malformed_json",
        )
        error_of(c.post("/v1/jobs", json=["a", "list"]), 422, "invalid_request")
        error_of(c.post("/v1/jobs", json={"recipe": {"steps": []}}), 422, "invalid_request")
        error_of(c.get("/v1/jobs", params={"status": "sleeping"}), 422, "invalid_request")
        error_of(c.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
        assert [j["id"] for j in c.get("/v1/jobs").json()["items"]] == before  # nothing was queued


def test_idempotency_key(prod_stack, ready_digits):
    model, _ = ready_digits
    body = {"model_id": model["id"], "recipe": {"steps": [{"method": "export", "format": "pt2"}]}}
    with prod_stack.client() as c:
        first = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
        again = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        changed = dict(body, name="something else")
        error_of(c.post("/v1/jobs", json=changed, headers={"Idempotency-Key": "retry-me"}), 409, "idempotency_conflict")


def test_cancel_and_delete_conflicts(prod_stack, ready_digits, tmp_path):
    model, _ = ready_digits
    with prod_stack.client() as c:
        job = submit_export(c, model)
        error_of(c.delete(f"/v1/models/{model['id']}"), 409, "in_use")
        wait_job(c, job["id"])
        error_of(c.post(f"/v1/jobs/{job['id']}/cancel"), 409, "already_finished")


def test_delete_keeps_shared_bytes(prod_stack, cnn_pt2):
    with prod_stack.client() as c:
        a = upload(c, "models", cnn_pt2).json()
        b = upload(c, "models", cnn_pt2, name="second copy").json()
        assert a["sha256"] == b["sha256"] and a["id"] != b["id"]
        wait_ready(c, "models", a["id"]), wait_ready(c, "models", b["id"])
        assert c.delete(f"/v1/models/{a['id']}").status_code == 204
        assert prod_stack.s3.has(a["sha256"])  # still used by the other copy (and the shared fixture's model)
        error_of(c.get(f"/v1/models/{a['id']}"), 404, "not_found")


def test_deleting_the_last_reference_removes_the_bytes(prod_stack, tmp_path):
    unique = tmp_path / "unique.npz"
    np.savez(unique, x=np.random.default_rng().random((4, 1, 8, 8), dtype=np.float32))
    with prod_stack.client() as c:
        d = wait_ready(c, "datasets", upload(c, "datasets", unique).json()["id"])
        assert d["status"] == "ready" and prod_stack.s3.has(d["sha256"])
        assert c.delete(f"/v1/datasets/{d['id']}").status_code == 204
    assert not prod_stack.s3.has(d["sha256"])


def test_no_500_in_the_api_log(prod_stack):
    log = prod_stack.api_log.read_text()
    assert '"status": 500' not in log


def test_active_job_limit_is_429(prod_stack, cnn_pt2):
    import torch

    if torch.cuda.is_available():
        pytest.skip("cuda jobs would run here instead of waiting")
    key = prod_stack.admin("create-key", "--tenant", "busy")
    with prod_stack.client(api_key=key) as c:
        model = wait_ready(c, "models", upload(c, "models", cnn_pt2).json()["id"])
        body = {"model_id": model["id"], "device": "cuda", "recipe": {"steps": [{"method": "export", "format": "pt2"}]}}
        accepted = []
        for _ in range(101):  # cuda jobs wait for a GPU worker, so they stay active
            r = c.post("/v1/jobs", json=body)
            if r.status_code != 202:
                break
            accepted.append(r.json()["id"])
        assert len(accepted) == 100  # SQUEEZE_MAX_ACTIVE_JOBS_PER_TENANT's default
        error_of(r, 429, "too_many_jobs")
        assert r.headers["retry-after"]
        for job_id in accepted:
            assert c.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        again = c.post("/v1/jobs", json=body)
        assert again.status_code == 202  # room again
        c.post(f"/v1/jobs/{again.json()['id']}/cancel")


def test_cursor_pagination(prod_stack, cnn_pt2):
    key = prod_stack.admin("create-key", "--tenant", "pages")
    with prod_stack.client(api_key=key) as c:
        ids = [upload(c, "models", cnn_pt2, name=f"m{i}").json()["id"] for i in range(5)]
        seen, cursor = [], None
        while True:
            page = c.get("/v1/models", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [m["id"] for m in page["items"]]
            assert len(page["items"]) <= 2
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert seen == ids[::-1]  # newest first, each once


def test_curl_d_without_a_json_content_type_still_works(prod_stack, ready_digits):
    model, _ = ready_digits
    body = json.dumps({"model_id": model["id"], "recipe": {"steps": [{"method": "export", "format": "pt2"}]}})
    with prod_stack.client() as c:  # what `curl -d '{...}'` sends
        r = c.post("/v1/jobs", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 202, r.text
        error_of(
            c.post("/v1/jobs", content=b"model_id=1", headers={"Content-Type": "application/x-www-form-urlencoded"}),
            400,
            "malformed_json",
        )


def test_bodies_are_bounded_and_the_key_checked_before_they_are_read(prod_stack, cnn_pt2):
    big = b'{"name": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    deep = b"[" * 5000 + b"]" * 5000
    for key in ("", "sqz_not_a_key"):  # no key, or a wrong one: 401 before the body matters
        with prod_stack.client(api_key=key) as anonymous:
            error_of(anonymous.post("/v1/jobs", content=big), 401, "unauthorized")
            error_of(anonymous.post("/v1/jobs", content=deep), 401, "unauthorized")
    with prod_stack.client() as c:
        message = error_of(c.post("/v1/jobs", content=big), 413, "too_large")
        assert "1048576 bytes" in message
        chunked = c.post("/v1/jobs", content=iter([big[:1000], big[1000:]]))  # no Content-Length: counted as read
        error_of(chunked, 413, "too_large")
        assert "deeper than 64" in error_of(c.post("/v1/jobs", content=deep), 400, "malformed_json")
        nested = {"model_id": "mdl_x", "recipe": {"steps": [{"method": "export", "format": "pt2"}]}, "name": "x"}
        for _ in range(70):
            nested = {"n": nested}
        error_of(c.post("/v1/jobs", json=nested), 400, "malformed_json")
        # a JSON-valued form field of an upload is bounded the same way
        with open(cnn_pt2, "rb") as f:
            r = c.post(
                "/v1/models",
                files={"file": ("cnn.pt2", f)},
                data={"arch_kwargs": "[" * 5000 + "]" * 5000},
            )
        assert "arch_kwargs nests deeper than 64" in error_of(r, 400, "malformed_json")


def test_partial_uploads_of_a_killed_process_are_removed(prod_stack):
    # what `kill -9` of an API mid-upload leaves: a temp file nothing writes to any more
    tmp = prod_stack.home / "blobs" / "tmp"
    stale, live = tmp / "upload-killed", tmp / "upload-live"
    stale.write_bytes(b"x" * 1000)
    live.write_bytes(b"y" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    deadline = time.monotonic() + 20
    while stale.exists() and time.monotonic() < deadline:  # the sweeper runs every second in the tests
        time.sleep(0.5)
    assert not stale.exists() and live.exists()
    live.unlink()


def test_re_training_a_language_model_on_a_few_texts_is_refused_at_submission(prod_stack, tmp_path):
    """#34: a causal LM's width pruning on two sentences is refused before it is queued (422, with the tokens it
    would need). (That quantizing it is accepted is checked without a job: test_recipes.)"""
    from tests.test_named_inputs import tiny_llama_zip

    texts = tmp_path / "two.jsonl"
    texts.write_text('{"text": "the cat sat on the mat"}\n{"text": "a dog ran fast"}\n')
    with prod_stack.client() as c:
        model = wait_ready(c, "models", upload(c, "models", Path(tiny_llama_zip(tmp_path))).json()["id"])
        data = wait_ready(c, "datasets", upload(c, "datasets", texts).json()["id"])
        assert model["status"] == data["status"] == "ready", (model, data)
        assert model["info"]["task"] == "causal_lm" and data["info"]["text_chars"] == 36

        def job(step):
            return c.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "recipe": {"steps": [step]}})

        message = error_of(job({"method": "prune", "kind": "structured", "sparsity": 0.5}), 422, "invalid_recipe")
        assert "tokens of text to re-learn them" in message and "this dataset has about 9 tokens" in message, message
        assert not [j for j in c.get("/v1/jobs").json()["items"] if j["model_id"] == model["id"]]  # nothing queued


def test_a_full_database_pool_is_503_with_retry_after_never_500(prod_stack, ready_digits):
    """#32 item 2 on PostgreSQL: while a lock holds every reader of a table, the API's 30 pooled connections
    (10 + 20 overflow) fill with waiting requests; the next ones wait db_pool_timeout_s (5 s) for a connection
    and are answered 503 `busy` with Retry-After, not 500; once the lock goes, every waiting request is served."""
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    url = prod_stack.env["SQUEEZE_DATABASE_URL"].replace("+psycopg", "")
    headers = {"Authorization": f"Bearer {prod_stack.api_key}"}
    with psycopg.connect(url) as lock:
        lock.execute("LOCK TABLE models IN ACCESS EXCLUSIVE MODE")  # held until this transaction ends
        with ThreadPoolExecutor(36) as pool:
            pending = [pool.submit(httpx.get, f"{prod_stack.url}/v1/models", headers=headers, timeout=60)
                       for _ in range(36)]
            time.sleep(6.5)  # past the pool timeout (5 s) for the requests that found no connection
            early = [f for f in pending if f.done()]
            lock.rollback()  # the lock goes: the requests holding connections finish
            refused, answers = [f.result() for f in early], [f.result() for f in pending]
    assert refused, "with the pool full, some requests must have been answered while the lock was held"
    assert all(r.status_code == 503 for r in refused), [(r.status_code, r.text[:80]) for r in refused]
    assert all(r.json()["error"]["code"] == "busy" and r.headers["retry-after"] == "2" for r in refused)
    assert {r.status_code for r in answers} <= {200, 503} and sum(r.status_code == 200 for r in answers) >= 25
    with prod_stack.client() as c:  # and the service is whole again
        assert c.get("/v1/models").status_code == 200 and c.get("/readyz").status_code == 200
