"""What must survive: a worker killed mid-job, a job that blows its memory limit, cancellation of a
running job, and a `cuda` job with no GPU worker (it waits, visibly, instead of running on a CPU)."""

from __future__ import annotations

import time
from datetime import datetime

import psutil
import pytest
import torch
from torch import nn

from tests.stack import METRICS_TOKEN, upload, wait_for, wait_job, wait_ready

EXPORT = {"steps": [{"method": "export", "format": "pt2"}]}
INT8 = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}


def submit(c, model, dataset, recipe, device="cpu"):
    r = c.post(
        "/v1/jobs", json={"model_id": model["id"], "dataset_id": dataset["id"], "recipe": recipe, "device": device}
    )
    assert r.status_code == 202, r.text
    return r.json()


def wait_running(c, job_id, min_progress=0.0):
    return wait_for(
        c,
        f"/v1/jobs/{job_id}",
        lambda b: b["status"] != "queued" and b["progress"] >= min_progress,
        every=0.05,
        timeout=120,
    )


def test_worker_killed_mid_job_is_rerun_elsewhere(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = submit(c, model, dataset, INT8)
        running = wait_running(c, job["id"])
        assert running["status"] == "running", running
        children = [p for pid in prod_stack.worker_pids("w1") for p in psutil.Process(pid).children(recursive=True)]
        prod_stack.kill_worker("w1")  # SIGKILL: the worker, its pool and (by parent-death signal) the job process
        time.sleep(1)
        assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        prod_stack.start_worker("w2")  # another machine picks the job up
        done = wait_job(c, job["id"])
    assert done["status"] == "succeeded", done["error"]
    [(ran_on,)] = prod_stack.sql("SELECT worker FROM jobs WHERE id = %s", job["id"])
    assert done["attempts"] == 2 and ran_on.startswith("w2@")
    assert done["worker"].startswith("w-") and "@" not in done["worker"]  # an opaque label, not the host
    assert len(done["artifacts"]) == 1  # the dead attempt left nothing behind


def test_distillation_resumes_from_its_checkpoint_after_the_worker_dies(prod_stack, ready_digits):
    model, dataset = ready_digits
    recipe = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 16, "batch_size": 8}]}
    with prod_stack.client() as c:
        job = submit(c, model, dataset, recipe)
        wait_for(
            c,
            f"/v1/jobs/{job['id']}",
            lambda b: "epoch 3/16" in (b["stage"] or "") or b["progress"] > 0.1,
            every=0.05,
            timeout=180,
        )
        worker = prod_stack.sql("SELECT worker FROM jobs WHERE id = %s", job["id"])[0][0].split("@")[0]
        prod_stack.kill_worker(worker)
        prod_stack.start_worker(f"{worker}r")
        done = wait_job(c, job["id"], timeout=600)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    resumed = done["results"]["steps"][0]["details"]["resumed_from_epoch"]
    assert 1 <= resumed < 16  # a checkpoint from before the kill, not a fresh start
    stages = [
        row[0]["stage"]
        for row in prod_stack.sql(
            "SELECT data FROM job_events WHERE job_id = %s AND kind = 'stage' ORDER BY id", job["id"]
        )
    ]
    assert any(f"resumed from epoch {resumed}" in s for s in stages)
    # finished: its checkpoints are gone from the blob store
    listed = prod_stack.s3.client().list_objects_v2(
        Bucket=prod_stack.s3.bucket, Prefix=f"blobs/checkpoints/{job['id']}"
    )
    assert listed.get("KeyCount", 0) == 0


def test_cancel_a_running_job(prod_stack, ready_digits):
    model, dataset = ready_digits
    with prod_stack.client() as c:
        job = submit(c, model, dataset, INT8)
        wait_running(c, job["id"], 0.01)
        r = c.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code in (200, 202), r.text
        done = wait_job(c, job["id"], timeout=60)
        assert done["status"] == "cancelled" and done["artifacts"] == []
        queued = submit(c, model, dataset, EXPORT, device="cuda")  # no GPU worker: it stays queued
        r = c.post(f"/v1/jobs/{queued['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        after = submit(c, model, dataset, EXPORT)  # the worker is still serving
        assert wait_job(c, after["id"])["status"] == "succeeded"


def test_cuda_job_waits_for_a_gpu_worker(prod_stack, ready_digits):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU, so its worker consumes the gpu queue")
    model, dataset = ready_digits
    with prod_stack.client() as c:
        before = gpu_queue_depth(c)
        job = submit(c, model, dataset, EXPORT, device="cuda")
        time.sleep(5)
        seen = c.get(f"/v1/jobs/{job['id']}").json()
        assert seen["status"] == "queued" and seen["queue"] == "gpu" and "GPU" in seen["stage"]
        assert gpu_queue_depth(c) == before + 1
        scraped = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
        assert 'squeeze_jobs{status="queued"}' in scraped
        c.post(f"/v1/jobs/{job['id']}/cancel")


def gpu_queue_depth(c) -> float:
    scraped = c.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    line = next(ln for ln in scraped.splitlines() if ln.startswith('squeeze_queue_depth{queue="gpu"}'))
    return float(line.split()[-1])


class MemoryHog(nn.Module):
    """Fine at batch 1 and 2 (inspection, export); at the measured batch of 32 it allocates 2 GB."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        ballast = x.new_ones((x.shape[0], 16_000_000)).sum(dim=1, keepdim=True)
        return self.fc(x.flatten(1)) + ballast * 0


def test_time_limit_fails_the_job_with_a_reason(prod_stack, ready_digits):
    model, dataset = ready_digits
    name = next(iter(prod_stack.workers))
    prod_stack.stop_worker(name)
    prod_stack.start_worker("hurried", env={"SQUEEZE_JOB_TIME_LIMIT_S": "2"})  # less than loading PyTorch takes
    try:
        with prod_stack.client() as c:
            done = wait_job(c, submit(c, model, dataset, EXPORT)["id"])
        assert done["status"] == "failed" and done["error"]["code"] == "timeout"
        assert "time limit of 2 s" in done["error"]["message"]
    finally:
        prod_stack.stop_worker("hurried")
        prod_stack.start_worker(name)


def test_memory_limit_fails_the_job_and_the_worker_keeps_serving(prod_stack, ready_digits, tmp_path):
    model, dataset = ready_digits
    hog = tmp_path / "hog.pt2"
    program = torch.export.export(
        MemoryHog().eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    torch.export.save(program, str(hog))
    name = next(iter(prod_stack.workers))
    prod_stack.stop_worker(name)
    prod_stack.start_worker("lowmem", env={"SQUEEZE_JOB_MEMORY_LIMIT_MB": "2000"})
    try:
        with prod_stack.client() as c:
            hog_model = wait_ready(c, "models", upload(c, "models", hog).json()["id"])
            assert hog_model["status"] == "ready", hog_model
            failed = wait_job(c, submit(c, hog_model, dataset, EXPORT)["id"])
            assert failed["status"] == "failed"
            assert failed["error"]["code"] == "resource_exhausted" and "2000 MB" in failed["error"]["message"]
            ok = wait_job(c, submit(c, model, dataset, EXPORT)["id"])
            [(ran_on,)] = prod_stack.sql("SELECT worker FROM jobs WHERE id = %s", ok["id"])
            assert ok["status"] == "succeeded" and ran_on.startswith("lowmem@")
    finally:
        prod_stack.stop_worker("lowmem")
        prod_stack.start_worker(name)


def test_pool_process_killed_mid_job_is_rerun_at_once(prod_stack, ready_digits):
    """Only the pool process dies (the worker's main process lives): reject_on_worker_lost redelivers the
    message and the same worker takes the job over without waiting for the heartbeat timeout."""
    model, dataset = ready_digits
    name = next(iter(prod_stack.workers))
    with prod_stack.client() as c:
        job = submit(c, model, dataset, INT8)
        running = wait_running(c, job["id"])
        [(owner,)] = prod_stack.sql("SELECT worker FROM jobs WHERE id = %s", job["id"])
        pid = int(owner.rpartition(":")[2])
        assert pid != prod_stack.workers[name].pid
        psutil.Process(pid).kill()
        done = wait_job(c, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2 and done["worker"] != running["worker"]
    assert prod_stack.workers[name].poll() is None
    started = [datetime.fromisoformat(t) for t in (running["started_at"], done["started_at"])]
    assert (started[1] - started[0]).total_seconds() < float(prod_stack.env["SQUEEZE_HEARTBEAT_TIMEOUT_S"])
