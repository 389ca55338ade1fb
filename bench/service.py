"""Service benchmark on PostgreSQL + Redis with a real worker: submit -> worker-start latency, GET job
latency under 50 concurrent clients, and a 1 GB upload with the API's peak resident memory.

    .venv/bin/python bench/service.py [--jobs 50] [--clients 50] [--requests 40] [--upload-gb 1]

Starts its own API and worker (a fresh PostgreSQL database, Redis db 12) and prints the figures;
they are also written to bench/out/service.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.digits_example import write_digits  # noqa: E402
from tests.stack import Stack, create_pg_database, drop_pg_database, pg_url, redis_db_url, upload, wait_job, wait_ready  # noqa: E402  # noqa: E402

KEY = "sqz_bench_key"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def submit_to_start(stack: Stack, model_id: str, n: int) -> dict:
    """One job at a time (so queueing behind other jobs is not counted): created_at -> started_at, both
    stamped by the database clock; the job is cancelled as soon as it started."""
    latencies, client_submit = [], []
    with stack.client() as c:
        for _ in range(n):
            t0 = time.perf_counter()
            job = c.post(
                "/v1/jobs",
                json={
                    "model_id": model_id,
                    "device": "cpu",
                    "recipe": {"steps": [{"method": "export", "format": "pt2"}]},
                },
            ).json()
            client_submit.append((time.perf_counter() - t0) * 1000)
            while (seen := c.get(f"/v1/jobs/{job['id']}").json())["started_at"] is None:
                time.sleep(0.005)
            created = datetime.fromisoformat(seen["created_at"])
            started = datetime.fromisoformat(seen["started_at"])
            latencies.append((started - created).total_seconds() * 1000)
            c.post(f"/v1/jobs/{job['id']}/cancel")
            wait_job(c, job["id"], timeout=120)
    return {
        "jobs": n,
        "submit_to_start_ms": {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies)},
        "post_jobs_ms": {"p50": pct(client_submit, 50), "p99": pct(client_submit, 99)},
    }


async def _get_load(url: str, job_id: str, clients: int, requests: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits, timeout=60
    ) as c:

        async def one_client() -> None:
            for _ in range(requests):
                t0 = time.perf_counter()
                r = await c.get(f"/v1/jobs/{job_id}")
                latencies.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200

        await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def get_job_latency(stack: Stack, job_id: str, clients: int, requests: int) -> dict:
    started = time.perf_counter()
    latencies = asyncio.run(_get_load(stack.url, job_id, clients, requests))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": pct(latencies, 50),
        "p99_ms": pct(latencies, 99),
        "requests_per_s": len(latencies) / wall,
    }


def big_upload(stack: Stack, gigabytes: float) -> dict:
    api = psutil.Process(stack.api.pid)
    size = int(gigabytes * 1024**3)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        header = b'{"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}' % (
            (size - 128) // 4,
            (size - 128) // 4 * 4,
        )
        header = header.ljust(120)
        with open(path, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header)
            chunk = bytes(8 << 20)
            remaining = size - 128
            while remaining > 0:
                f.write(chunk[: min(len(chunk), remaining)])
                remaining -= len(chunk)
        baseline = api.memory_info().rss
        peak = [baseline]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], api.memory_info().rss)
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        t0 = time.perf_counter()
        with stack.client() as c:
            c.timeout = httpx.Timeout(600)
            r = upload(c, "models", path)
        seconds = time.perf_counter() - t0
        stop.set()
        sampler.join()
        assert r.status_code == 201, r.text
        with stack.client() as c:
            c.delete(f"/v1/models/{r.json()['id']}")
    return {
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / 2**20 / seconds,
        "api_rss_before_mb": baseline / 2**20,
        "api_rss_peak_mb": peak[0] / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="GETs per client")
    parser.add_argument("--upload-gb", type=float, default=1.0)
    args = parser.parse_args()
    database = create_pg_database()
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as home:
        stack = Stack(
            Path(home),
            {
                "SQUEEZE_DATABASE_URL": pg_url(database),
                "SQUEEZE_BROKER_URL": redis_db_url(12),
                "SQUEEZE_BOOTSTRAP_API_KEY": KEY,
            },
            api_key=KEY,
        )
        try:
            stack.start_api()
            stack.start_worker("bench")
            model_path, _, _ = write_digits(Path(home) / "digits")
            with stack.client() as c:
                model = wait_ready(c, "models", upload(c, "models", model_path).json()["id"])
            figures = {"submit_to_start": submit_to_start(stack, model["id"], args.jobs)}
            with stack.client() as c:
                any_job = c.get("/v1/jobs").json()["items"][0]["id"]
            figures["get_job"] = get_job_latency(stack, any_job, args.clients, args.requests)
            figures["upload"] = big_upload(stack, args.upload_gb)
        except BaseException:
            print((Path(home) / "logs" / "api.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            stack.stop()
            drop_pg_database(database)
    s, g, u = figures["submit_to_start"], figures["get_job"], figures["upload"]
    print(
        f"submit -> worker start ({s['jobs']} jobs, one at a time): p50 {s['submit_to_start_ms']['p50']:.1f} ms, "
        f"p99 {s['submit_to_start_ms']['p99']:.1f} ms (POST /v1/jobs p50 {s['post_jobs_ms']['p50']:.1f} ms)"
    )
    print(
        f"GET /v1/jobs/{{id}} with {g['clients']} concurrent clients ({g['requests']} requests): "
        f"p50 {g['p50_ms']:.1f} ms, p99 {g['p99_ms']:.1f} ms, {g['requests_per_s']:.0f} req/s"
    )
    print(
        f"upload {u['bytes'] / 2**30:.2f} GiB: {u['seconds']:.1f} s ({u['mb_per_s']:.0f} MiB/s), API RSS "
        f"{u['api_rss_before_mb']:.0f} MiB before, peak {u['api_rss_peak_mb']:.0f} MiB"
    )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
