"""Measurement under load: are reported speedups trustworthy on a busy machine?

    .venv/bin/python bench/measure.py [--models digits,resnet18] [--recipes ...] [--repeats 3] [--hogs 1]

Runs each recipe of bench/engine.py (plus int8_static) `--repeats` times on a quiet machine and as many
times with `--hogs` busy-loop processes running beside it, and prints per recipe the reported speedups
(batch 1 / batch N, with their 95 % intervals where the report has them), their spread, how many loaded
runs were flagged noisy or inconclusive, and whether every loaded run is either flagged or within
+-25 % of the quiet median (the target). Figures land in bench/out/measure.json.

Reports written before speedups carried intervals read too (no interval, never flagged), so the same
script measures an older checkout for a before/after table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run_json  # noqa: E402
from bench.engine import RECIPES, build  # noqa: E402
from workers.compression import EngineError, MeasureSettings  # noqa: E402

ALL_RECIPES = {**RECIPES, "int8_static": [{"method": "quantize", "scheme": "int8_static"}]}
TOLERANCE = 0.25


@contextmanager
def hogs(n: int):
    """`n` processes spinning on a CPU each, stopped on exit (bounded: they die with this process too)."""
    code = "import os, time\nend = time.time() + 3600\nwhile time.time() < end and os.getppid() != 1: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def one_run(model: Path, data: Path, recipe: str, folder: Path, settings: MeasureSettings) -> dict:
    try:
        report = run_json(model, {"steps": ALL_RECIPES[recipe]}, data_path=data, out_dir=folder, settings=settings)
    except EngineError as e:
        return {"error": e.message[:200]}
    final = report["final"]
    ci = final.get("speedup_ci95") or {}
    return {
        "b1": final["speedup_b1"],
        "bN": final["speedup_bN"],
        "ci_b1": ci.get("b1"),
        "ci_bN": ci.get("bN"),
        "noisy": final.get("noisy", False),
        "verdict": final["verdict"],
        "flagged": bool(final.get("noisy")) or final["verdict"] == "inconclusive",
        "timing": report["baseline"].get("timing"),
        "reference": final.get("runtime_baseline"),
    }


def fmt(run: dict, key: str) -> str:
    if run.get(key) is None:
        return "-"
    ci = run.get(f"ci_{key}")
    text = f"{run[key]:.2f}"
    return text + (f"[{ci[0]:.2f},{ci[1]:.2f}]" if ci else "")


def summarise(quiet: list[dict], loaded: list[dict], key: str) -> tuple[str, bool]:
    q = [r[key] for r in quiet if r.get(key)]
    if not q:
        return "-", True
    ref = statistics.median(q)
    ok = all(
        r.get("flagged") or (r.get(key) and abs(r[key] / ref - 1) <= TOLERANCE) for r in loaded if "error" not in r
    )
    spread_q = (max(q) / min(q) - 1) * 100
    lv = [r[key] for r in loaded if r.get(key)]
    spread_l = (max(lv) / min(lv) - 1) * 100 if lv else float("nan")
    worst = max((abs(v / ref - 1) * 100 for v in lv), default=float("nan"))
    return f"quiet {ref:.2f} (spread {spread_q:.0f}%), loaded spread {spread_l:.0f}%, worst {worst:.0f}% off", ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--recipes", default=",".join(ALL_RECIPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=1, help="busy-loop processes beside the loaded runs")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "measure.json"))
    args = parser.parse_args()
    settings = MeasureSettings(threads=args.threads, seconds_per_model=args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="squeeze-measure-"))
    rows, all_ok = {}, True
    for name in args.models.split(","):
        model, data = build(name, folder)
        for recipe in args.recipes.split(","):
            runs: dict[str, list[dict]] = {"quiet": [], "loaded": []}
            for k in range(args.repeats):
                for mode in ("quiet", "loaded"):
                    where = folder / name / recipe / f"{mode}{k}"
                    if mode == "loaded":
                        with hogs(args.hogs):
                            runs[mode].append(one_run(model, data, recipe, where, settings))
                    else:
                        runs[mode].append(one_run(model, data, recipe, where, settings))
                    r = runs[mode][-1]
                    print(
                        f"  {name}/{recipe} {mode} {k}: b1 {fmt(r, 'b1')} bN {fmt(r, 'bN')} "
                        f"{'FLAGGED ' if r.get('flagged') else ''}{r.get('verdict', r.get('error'))}",
                        file=sys.stderr,
                        flush=True,
                    )
            lines = []
            for key in ("b1", "bN"):
                text, ok = summarise(runs["quiet"], runs["loaded"], key)
                all_ok &= ok
                lines.append(f"{key}: {text} -> {'ok' if ok else 'MISSED'}")
            flagged = sum(bool(r.get("flagged")) for r in runs["loaded"])
            print(f"{name:<10} {recipe:<18} loaded flagged {flagged}/{len(runs['loaded'])}; " + "; ".join(lines))
            rows[f"{name}/{recipe}"] = runs
    print(f"\ntarget (every loaded run flagged or within +-{TOLERANCE:.0%} of quiet): {'met' if all_ok else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"hogs": args.hogs, "repeats": args.repeats, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
