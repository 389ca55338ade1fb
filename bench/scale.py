"""Scale-out: one API, then 1, 2 and 4 workers (separate processes, one thread and one job at a time each,
each with its own SQUEEZE_HOME as if on its own machine) sharing only PostgreSQL, Redis and an
S3-compatible bucket. The same fixed set of short real jobs (the digits CNN: fp16, int8_dynamic, pt2
export, in turn) runs on each; jobs/minute is jobs / (first submission -> last job finished, by the
database clock).

    .venv/bin/python bench/scale.py [--workers 1,2,4] [--jobs 12] [--repeats 1]

Prints a table and writes bench/out/scale.json. On a machine with C cores, expect about min(N, C)x from
N workers: the jobs are CPU-bound, and with one thread each a worker uses one core."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.digits_example import write_digits  # noqa: E402
from tests.stack import (  # noqa: E402
    S3Server,
    Stack,
    create_pg_database,
    drop_pg_database,
    pg_url,
    redis_db_url,
    upload,
    wait_job,
    wait_ready,
)

KEY = "sqz_bench_scale_key"
RECIPES = [
    {"steps": [{"method": "quantize", "scheme": "fp16"}]},
    {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
    {"steps": [{"method": "export", "format": "pt2"}]},
]
# one core per worker, and the timing short: the figure is the service's throughput, not the engine's
WORKER_ENV = {"SQUEEZE_THREADS": "1", "SQUEEZE_WORKER_CONCURRENCY": "1", "SQUEEZE_MAX_RUNNING_JOBS_PER_TENANT": "8"}


def run_batch(stack: Stack, model_id: str, dataset_id: str, jobs: int) -> dict:
    with stack.client() as c:
        ids = []
        for i in range(jobs):
            body = {"model_id": model_id, "dataset_id": dataset_id, "recipe": RECIPES[i % len(RECIPES)], "device": "cpu"}
            r = c.post("/v1/jobs", json=body)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        done = [wait_job(c, job_id, timeout=1800) for job_id in ids]
    failed = [d["id"] for d in done if d["status"] != "succeeded"]
    assert not failed, f"jobs failed: {failed}"
    first = min(datetime.fromisoformat(d["created_at"]) for d in done)
    last = max(datetime.fromisoformat(d["finished_at"]) for d in done)
    seconds = (last - first).total_seconds()
    workers = sorted({d["worker"].split("@")[0] for d in done})
    return {"seconds": seconds, "jobs_per_min": 60 * jobs / seconds, "workers_used": workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    database = create_pg_database()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        s3 = S3Server(home)
        stack = Stack(
            home / "api",
            {**s3.env, "SQUEEZE_DATABASE_URL": pg_url(database), "SQUEEZE_BROKER_URL": redis_db_url(13),
             "SQUEEZE_BOOTSTRAP_API_KEY": KEY},
            api_key=KEY,
        )  # fmt: skip
        rows = []
        try:
            stack.start_api()
            model_path, data_path, _ = write_digits(home / "digits")
            for n in counts:
                names = [f"scale{n}-{i}" for i in range(n)]
                for name in names:  # a home of its own: its blob cache and work folders, as on another machine
                    stack.start_worker(name, env={**WORKER_ENV, "SQUEEZE_HOME": str(home / name)})
                if not rows:
                    with stack.client() as c:
                        model = wait_ready(c, "models", upload(c, "models", model_path).json()["id"])
                        dataset = wait_ready(c, "datasets", upload(c, "datasets", data_path).json()["id"])
                    run_batch(stack, model["id"], dataset["id"], len(RECIPES) * n)  # warm: first-run costs out
                runs = [run_batch(stack, model["id"], dataset["id"], args.jobs) for _ in range(args.repeats)]
                rate = statistics.median(r["jobs_per_min"] for r in runs)
                rows.append({"workers": n, "jobs": args.jobs, "runs": runs, "jobs_per_min": rate})
                walls = ", ".join(f"{r['seconds']:.1f} s" for r in runs)
                print(f"{n} worker(s): {rate:.1f} jobs/min ({walls})", flush=True)
                for name in names:
                    stack.stop_worker(name)
        finally:
            stack.stop()
            s3.stop()
            drop_pg_database(database)
    base = rows[0]["jobs_per_min"]
    print(f"\ncores: {os.cpu_count()}; jobs: {args.jobs} short digits jobs (fp16, int8_dynamic, pt2 export in turn)")
    print("| workers | jobs/min | vs 1 worker | wall s |")
    print("|---|---|---|---|")
    for row in rows:
        walls = ", ".join(f"{r['seconds']:.1f}" for r in row["runs"])
        print(f"| {row['workers']} | {row['jobs_per_min']:.1f} | {row['jobs_per_min'] / base:.2f}x | {walls} |")
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / "scale.json").write_text(json.dumps({"cores": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
