"""Operations: the catalogue, health and readiness (including a broker that is down), Prometheus
metrics, and structured logs that carry the job id."""

from __future__ import annotations

import json
import time

import pytest

from tests.stack import METRICS_TOKEN, Stack, upload, wait_job


def test_methods_catalogue(prod_stack):
    with prod_stack.client() as c:
        methods = {m["method"]: m for m in c.get("/v1/methods").json()["methods"]}
    assert {"quantize", "prune", "distill", "export"} <= set(methods)
    quantize = methods["quantize"]
    assert "scheme" in quantize["schema"]["properties"]
    assert "onnx" in quantize["formats"]["scheme"]["int8_dynamic"]
    assert "onnx" not in quantize["formats"]["scheme"]["fp16"]


def test_health_readiness_and_metrics(prod_stack):
    with prod_stack.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz").json()
        workers = ready.pop("workers")  # issue 16: readiness names each live worker's isolation
        assert ready == {
            "status": "ok",
            "checks": {"database": "ok", "broker": "ok", "blob_store": "ok", "workers": "ok"},
        }
        assert workers and all(w["isolation"]["mode"] == "bwrap" for w in workers), workers
        c.get("/v1/models")
        # /metrics counts every tenant's jobs: a tenant's key does not open it, the operator's token does
        assert c.get("/metrics").status_code == 401
        metrics = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    assert 'squeeze_http_request_duration_seconds_count{method="GET",route="/v1/models",status="200"}' in metrics
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        assert f'squeeze_jobs{{status="{status}"}}' in metrics
    assert 'squeeze_queue_depth{queue="cpu"}' in metrics


def test_logs_are_json_with_the_job_id(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = c.post(
            "/v1/jobs", json={"model_id": model["id"], "recipe": {"steps": [{"method": "export", "format": "pt2"}]}}
        ).json()
        wait_job(c, job["id"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [
            json.loads(ln)
            for f in prod_stack.logs.glob("worker-*.log")
            for ln in f.read_text().splitlines()
            if ln.startswith("{")
        ]
        mine = [ln for ln in lines if ln.get("job_id") == job["id"]]
        if any("job ended" in ln["message"] for ln in mine):
            break
        time.sleep(0.2)
    assert any(ln["message"].startswith("job started") for ln in mine), mine
    assert any("job ended" in ln["message"] for ln in mine)
    api = [json.loads(ln) for ln in prod_stack.api_log.read_text().splitlines() if ln.startswith("{")]
    assert any(ln.get("path") == f"/v1/jobs/{job['id']}" and ln.get("status") == 200 for ln in api)


@pytest.fixture
def broker_down(tmp_path):
    """An API whose broker is unreachable, configured for untrusted tenants (no private webhook hosts)."""
    stack = Stack(
        tmp_path,
        {
            "SQUEEZE_BROKER_URL": "redis://127.0.0.1:1/0",
            "SQUEEZE_BOOTSTRAP_API_KEY": "sqz_k",
            "SQUEEZE_WEBHOOK_ALLOW_PRIVATE": "false",  # the tests' other stacks opt in; this one says the default
        },
        api_key="sqz_k",
    )
    stack.start_api(probe="/healthz")
    yield stack
    stack.stop()


def test_broker_down_is_reported_not_hidden(broker_down, cnn_pt2):
    with broker_down.client() as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        checks = r.json()["checks"]
        assert checks["database"] == "ok" and checks["blob_store"] == "ok" and checks["broker"] != "ok"
        assert checks["workers"].startswith("no worker seen in the last")  # and none runs: not ready either
        started = time.monotonic()
        r = upload(c, "models", cnn_pt2)
        assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable"
        assert time.monotonic() - started < 20
        [model] = c.get("/v1/models").json()["items"]  # the bytes are kept; the reason is on the record
        assert model["status"] == "invalid" and model["error"]["code"] == "queue_unavailable"


def test_private_webhook_hosts_are_refused_by_default(broker_down):
    from app.store.config import Settings

    assert Settings.model_fields["webhook_allow_private"].default is False
    with broker_down.client() as c:
        for url in (
            "http://127.0.0.1:9/hook",
            "http://10.1.2.3/hook",
            "http://localhost/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/hook",  # carrier-grade NAT
            "http://[::1]:8000/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ):
            r = c.post("/v1/jobs", json={"model_id": "mdl_x", "recipe": {"steps": []}, "callback_url": url})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_callback_url", r.text
            assert "private address" in r.json()["error"]["message"]


@pytest.fixture
def limited(tmp_path):
    """An API with small request limits (the suite's other stacks lift them: all tests call from one address)."""
    stack = Stack(
        tmp_path,
        {
            "SQUEEZE_BOOTSTRAP_API_KEY": "sqz_k",
            "SQUEEZE_AUTH_FAILURES_PER_MINUTE": "5",
            "SQUEEZE_REQUESTS_PER_MINUTE_PER_KEY": "20",
        },
        api_key="sqz_k",
    )
    stack.start_api(probe="/healthz")
    yield stack
    stack.stop()


def test_wrong_keys_and_floods_get_429_with_retry_after(limited):
    with limited.client() as c:
        for _ in range(20):
            assert c.get("/v1/models").status_code == 200
        r = c.get("/v1/models")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
    with limited.client(api_key="sqz_guess") as guesser:
        codes = [guesser.get("/v1/jobs").status_code for _ in range(5)]
        assert codes == [401] * 5
        r = guesser.get("/v1/jobs")
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert "wrong API key" in r.json()["error"]["message"]
        # the sign-in form is the same door
        r = guesser.post("/ui/session", data={"api_key": "sqz_guess2"}, follow_redirects=False)
        assert r.status_code == 429
