"""Chaos on the real stack: the job's own process killed, Redis restarted empty, PostgreSQL restarted, each
mid-job; the worker killed mid-inspection. Every job ends in a terminal state or completes, none is lost or run twice to the end, and what
was stored is whole (its bytes match the recorded hash). The worker's main and pool processes killed
mid-job are in test_service_resilience.py."""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from tests.stack import poll_job, restart_postgres, restart_redis, sha256_of, upload, wait_for, wait_ready

# runs alone, after the parallel part of the suite: it restarts the PostgreSQL and Redis every test uses
pytestmark = pytest.mark.exclusive

INT8 = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}
# long enough to be mid-job when the chaos comes and still running when it is over (each test checks that):
# distillation with a couple of hundred steps
LONG = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 16, "batch_size": 8}]}


def submit(c, model, dataset, recipe) -> str:
    r = c.post(
        "/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": recipe, "device": "cpu"}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def running(c, job_id: str, progress: float = 0.05) -> dict:
    return wait_for(c, f"/v1/jobs/{job_id}", lambda b: b["status"] != "queued" and b["progress"] >= progress,
                    every=0.1, timeout=180)  # fmt: skip


def stored_whole(c, job: dict) -> None:
    """One artifact per step, each downloadable with the bytes its hash says."""
    steps = len(job["recipe"]["steps"])
    assert len(job["artifacts"]) == steps, job["artifacts"]
    for artifact in job["artifacts"]:
        body = c.get(f"/v1/artifacts/{artifact['id']}/download")
        assert body.status_code == 200 and sha256_of(body.content) == artifact["sha256"]


def test_the_jobs_own_process_killed_fails_the_job_with_a_reason(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job_id = submit(c, model, dataset, LONG)
        running(c, job_id)
        # the API names a worker only by an opaque label: which process runs it is the store's to say
        pool = int(prod_stack.sql("SELECT worker FROM jobs WHERE id = %s", job_id)[0][0].rpartition(":")[2])
        children = [
            p for p in psutil.Process(pool).children(recursive=True) if "workers.child" in " ".join(p.cmdline())
        ]
        assert children, "the job's child process was not found"
        children[-1].send_signal(signal.SIGKILL)
        done = poll_job(c, job_id)
        assert done["status"] == "failed" and done["error"]["code"] == "worker_crashed", done["error"]
        assert "SIGKILL" in done["error"]["message"] and "/" not in done["error"]["message"].split("SIGKILL")[0]
        assert done["attempts"] == 1 and done["artifacts"] == []
        after = poll_job(c, submit(c, model, dataset, INT8))  # the worker serves on
        assert after["status"] == "succeeded", after["error"]


def test_redis_restarted_empty_mid_job_loses_no_job(prod_stack, ready_digits, cnn_pt2, digits_npz):
    """The running job finishes; another tenant's queued job, whose message died with Redis, is sent again
    by the sweeper (the running job's end only sends a message for its own tenant's jobs)."""
    model, dataset = ready_digits
    other = prod_stack.admin("create-key", "--tenant", "chaos_b")
    with prod_stack.client() as c, prod_stack.client(api_key=other) as b:
        b_model, b_data = upload(b, "models", cnn_pt2).json(), upload(b, "datasets", digits_npz).json()
        b_model, b_data = wait_ready(b, "models", b_model["id"]), wait_ready(b, "datasets", b_data["id"])
        first = submit(c, model, dataset, LONG)
        running(c, first)
        second = submit(b, b_model, b_data, INT8)
        restart_redis()
        assert c.get(f"/v1/jobs/{first}").json()["status"] == "running"  # the restart came mid-job
        jobs = [(c, poll_job(c, first)), (b, poll_job(b, second))]
        for client, job in jobs:
            assert job["status"] == "succeeded", job["error"]
            assert job["attempts"] == 1, job  # neither was run twice
            stored_whole(client, job)
        assert c.get("/readyz").status_code == 200
    assert "queued jobs had no message in the broker" in prod_stack.api_log.read_text()


def test_postgres_restarted_mid_job_loses_no_job(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job_id = submit(c, model, dataset, LONG)
        running(c, job_id)
        restart_postgres()
        assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # the outage came mid-job
        done = poll_job(c, job_id)
        assert done["status"] == "succeeded", done["error"]
        stored_whole(c, done)
        time.sleep(1)
        assert c.get("/readyz").status_code == 200


def test_worker_killed_mid_inspection_is_inspected_again_soon(prod_stack, tmp_path):
    """The worker main process SIGKILLed while it inspects an upload: its inspection beat stops, and the
    sweeper sends the upload again after the heartbeat timeout (8 s here). Before, it stayed pending until the
    inspection time limit + 60 s (660 s by default) ran out, or the broker redelivered the message."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    path = tmp_path / "fresh.pt2"  # new bytes: nothing already inspected can answer for it
    torch.export.save(torch.export.export(model.eval(), (torch.randn(1, 16),)), path)
    with prod_stack.client() as c:
        row = upload(c, "models", path, name="inspected-twice").json()
        deadline = time.monotonic() + 60
        while not prod_stack.sql("SELECT inspect_heartbeat_at FROM models WHERE id = %s", row["id"])[0][0]:
            assert time.monotonic() < deadline, "no worker started the inspection"
            time.sleep(0.05)
        prod_stack.kill_worker("w1")  # the worker, its pool and the inspection's child
        killed = time.monotonic()
        assert c.get(f"/v1/models/{row['id']}").json()["status"] == "pending"
        prod_stack.start_worker("w1")  # the machine comes back (or another serves the queue)
        done = wait_for(c, f"/v1/models/{row['id']}", lambda b: b["status"] != "pending", timeout=120)
        waited = time.monotonic() - killed
    assert done["status"] == "ready", done
    assert waited < 120, waited
    assert "lost the worker inspecting it" in prod_stack.api_log.read_text()
