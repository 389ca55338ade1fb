"""What the sandbox costs a job: the supervised child's start-up and a whole inspection, with the sandbox
(bubblewrap) and without it (SQUEEZE_SANDBOX=off), interleaved, on the same files.

    .venv/bin/python bench/sandbox.py [--runs 7]

Two workloads: `start` (the child process starts, imports the protocol and exits: the fixed cost per
job) and `inspect` (the digits CNN inspected end to end: torch import, load, one forward pass). Prints
the median and the spread (min..max) of each, and the difference. Figures land in bench/out/sandbox.json."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.digits_example import write_digits  # noqa: E402
from workers.compression.contract.load import LoadOptions  # noqa: E402
from workers.compression.contract.protocol import InspectModel  # noqa: E402
from workers.sandbox import Mounts, SandboxLimits, probe  # noqa: E402
from workers.supervisor import supervise  # noqa: E402

START = [sys.executable, "-c", "import workers.compression.contract.protocol"]


def once(work: Path, model: Path, sandboxed: bool, workload: str, i: int) -> float:
    mounts = Mounts(work / f"{workload}-{int(sandboxed)}-{i}", sandboxed=sandboxed)
    spec = InspectModel(path=mounts.input(model, "model.pt2"), load=LoadOptions())
    started = time.perf_counter()
    outcome = supervise(
        spec,
        mounts,
        memory_limit_mb=8192,
        time_limit_s=300,
        sandbox=sandboxed,
        limits=SandboxLimits(),
        argv=START if workload == "start" else None,
    )
    elapsed = time.perf_counter() - started
    if workload == "inspect" and not outcome.ok:
        raise SystemExit(f"inspection failed ({'sandbox' if sandboxed else 'no sandbox'}): {outcome.message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    probe("bwrap")  # fails loudly when the sandbox cannot run here
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, _, _ = write_digits(work)
        results = {}
        for workload in ("start", "inspect"):
            times = {True: [], False: []}
            for i in range(args.runs):  # interleaved, so drift on a busy machine hits both alike
                for sandboxed in (False, True):
                    times[sandboxed].append(once(work, model, sandboxed, workload, i))
            row = {}
            for sandboxed, label in ((False, "off"), (True, "bwrap")):
                t = times[sandboxed]
                row[label] = {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
            row["overhead_s"] = row["bwrap"]["median_s"] - row["off"]["median_s"]
            results[workload] = row
            print(
                f"{workload:8s} off {row['off']['median_s'] * 1000:7.0f} ms ({row['off']['min_s'] * 1000:.0f}.."
                f"{row['off']['max_s'] * 1000:.0f})   bwrap {row['bwrap']['median_s'] * 1000:7.0f} ms "
                f"({row['bwrap']['min_s'] * 1000:.0f}..{row['bwrap']['max_s'] * 1000:.0f})   "
                f"overhead {row['overhead_s'] * 1000:+.0f} ms  (median of {args.runs})"
            )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sandbox.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
