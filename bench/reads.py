"""How `GET /v1/jobs/{id}` holds load, against the floor of the same server: a FastAPI hello-world on the
same uvicorn (same HTTP protocol, one process), measured side by side with wrk, interleaved.

    make bench-reads        (or: .venv/bin/python bench/reads.py [--seconds 10] [--rounds 3] [--connections 50])

Starts the service as `make run` does (embedded default, one worker), uploads the digits CNN, runs one job
to its end, then alternates wrk runs against the job's read and the hello-world. Prints requests a second,
mean and p99 latency for each, and the ratio (the job read's share of the hello-world's rate). Needs wrk
(Debian: apt-get install wrk; installed here when run as root)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.digits_example import write_digits  # noqa: E402
from tests.stack import Stack, free_port, upload, wait_job, wait_ready  # noqa: E402

HELLO = """
from fastapi import FastAPI
import uvicorn
from app.http import GuardedH11Protocol
app = FastAPI()
@app.get("/")
def hello():
    return {"hello": "world"}
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning", http=GuardedH11Protocol)
"""


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str]) -> dict:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    mean = re.search(r"Latency\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rate": rate,
        "mean_ms": float(mean.group(1)) * scale[mean.group(2)],
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)],
        "errors": int(errors.group(1)) if errors else 0,
    }


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk",
                       shell=True, check=True)
        return
    raise SystemExit("bench/reads.py needs wrk: sudo apt-get install -y wrk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    ensure_wrk()
    home = Path(tempfile.mkdtemp(prefix="squeeze-reads-"))
    stack = Stack(home, {"SQUEEZE_BOOTSTRAP_API_KEY": "sqz_bench_reads", "SQUEEZE_LOG_LEVEL": "WARNING",
                         "SQUEEZE_REQUESTS_PER_MINUTE_PER_KEY": "100000000"})
    for key in ("SQUEEZE_DATABASE_URL", "SQUEEZE_BROKER_URL", "SQUEEZE_BLOB_DIR"):
        stack.env.pop(key, None)
    stack.api_key = "sqz_bench_reads"
    port = free_port()
    hello = subprocess.Popen([sys.executable, "-c", HELLO, str(port)], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        stack.start_api(with_worker=True)
        model_path, data_path, _ = write_digits(home / "digits")
        with stack.client() as c:
            model = wait_ready(c, "models", upload(c, "models", model_path).json()["id"])
            data = wait_ready(c, "datasets", upload(c, "datasets", data_path).json()["id"])
            recipe = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}
            job = c.post("/v1/jobs", json={"model_id": model["id"], "dataset_id": data["id"], "recipe": recipe})
            done = wait_job(c, job.json()["id"])
            assert done["status"] == "succeeded", done["error"]
        time.sleep(2)
        targets = {
            "GET /v1/jobs/{id}": (f"{stack.url}/v1/jobs/{done['id']}", {"Authorization": f"Bearer {stack.api_key}"}),
            "hello-world": (f"http://127.0.0.1:{port}/", {}),
        }
        results: dict[str, list[dict]] = {name: [] for name in targets}
        wrk(targets["hello-world"][0], 2, args.connections, {})  # warm both up
        wrk(*targets["GET /v1/jobs/{id}"][:1], 2, args.connections, targets["GET /v1/jobs/{id}"][1])
        for _ in range(args.rounds):
            for name, (url, headers) in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections, headers))
        print(f"wrk -t1 -c{args.connections} -d{args.seconds}s, {args.rounds} interleaved rounds, "
              f"{os.cpu_count()} cores; the job: {len(done['artifacts'])} artifact(s), "
              f"{len(str(done['results']))} characters of results")
        print(f"{'target':<20} {'req/s (median)':>15} {'mean ms':>9} {'p99 ms':>9} {'non-2xx':>8}")
        medians = {}
        for name, runs in results.items():
            medians[name] = statistics.median(r["rate"] for r in runs)
            print(f"{name:<20} {medians[name]:>15.0f} {statistics.median(r['mean_ms'] for r in runs):>9.2f} "
                  f"{statistics.median(r['p99_ms'] for r in runs):>9.2f} {sum(r['errors'] for r in runs):>8}")
        ratio = medians["GET /v1/jobs/{id}"] / medians["hello-world"]
        per_round = [j["rate"] / h["rate"] for j, h in zip(results["GET /v1/jobs/{id}"], results["hello-world"])]
        print(f"job read / hello-world: {ratio:.0%} (per round {', '.join(f'{r:.0%}' for r in per_round)})")
    finally:
        hello.terminate()
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
