"""`auto` benchmark: the search under a 1-point accuracy budget (objective latency) against the best single
recipe of the quantization and pruning benchmarks, all on this machine, in one run.

    .venv/bin/python bench/auto.py [--models digits,resnet18] [--budget-digits 5] [--budget-resnet18 14]
                                   [--seconds 2] [--threads 2]

For each model: one `auto` job (run_recipe, as the worker runs it) with the given budget in minutes; then the
best single recipes as jobs: int8_static (its recommended runtime; the quantization benchmark's winner) and
structured pruning at 50 % (the pruning benchmark's recipe: 10 recovery epochs on digits, none on the
random-weight ResNet-18, which has nothing to recover). Finally the original, auto's recommended artifact
and the two single-recipe artifacts are measured together (interleaved timing, medians of per-round
ratios), so "at least as fast" compares figures from one measurement.

digits: the digits CNN (width 64) trained on 1400 samples, scored on the 397 held out (accuracy).
resnet18: torchvision ResNet-18 at 224x224, random weights, 320 random images to calibrate/train on and 64
  to score on (agreement with fp32 is the accuracy).
Figures land in bench/out/auto.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import quantize as quantize_bench  # noqa: E402
from bench import run_json  # noqa: E402
from bench.quantize import digits_model  # noqa: E402
from workers.compression import MeasureSettings, load_model, measure_models  # noqa: E402
from workers.compression.data import load_dataset  # noqa: E402
from workers.compression.quantization.pt2e import compile_for_cpu  # noqa: E402

BUDGET = 0.01


def resnet18_model(folder: Path) -> tuple[Path, Path, Path, dict]:
    # more images than the quantization bench: the search holds 20 % of them out to choose on
    return quantize_bench.resnet18_model(folder, calibration_images=320)


SINGLES = {
    "digits": {
        "int8_static (quantize bench)": {"method": "quantize", "scheme": "int8_static"},
        "structured 50% + 10 epochs (prune bench)": {
            "method": "prune",
            "kind": "structured",
            "sparsity": 0.5,
            "finetune_epochs": 10,
        },
    },
    "resnet18": {
        "int8_static (quantize bench)": {"method": "quantize", "scheme": "int8_static"},
        "structured 50% (prune bench)": {"method": "prune", "kind": "structured", "sparsity": 0.5},
    },
}


def run_job(model_path, step, train_path, eval_path, out, settings) -> tuple[dict, float]:
    t0 = time.monotonic()
    report = run_json(
        model_path, {"steps": [step]}, data_path=train_path, eval_data_path=eval_path, out_dir=out, settings=settings
    )
    return report, time.monotonic() - t0


def recommended_artifact(report: dict, out: Path) -> tuple[Path, str]:
    step = report["steps"][0]
    chosen = next((m for m in step.get("front", step.get("runtimes", [])) if m.get("recommended")), step)
    return out / chosen["artifact_id"], chosen["measurement"]["runtime"]


def bench_model(name: str, folder: Path, budget_minutes: float, settings: MeasureSettings) -> dict:
    model_path, train_path, eval_path, _ = {"digits": digits_model, "resnet18": resnet18_model}[name](folder)
    # the job's own measurement settings, as a default job runs
    job_settings = MeasureSettings(batch=settings.batch, threads=settings.threads)
    auto_step = {
        "method": "auto",
        "max_accuracy_drop": BUDGET,
        "objective": "latency",
        "budget_minutes": budget_minutes,
    }
    auto, auto_s = run_job(model_path, auto_step, train_path, eval_path, folder / "auto", job_settings)
    print(f"  {name} auto: {auto_s:.0f} s (budget {budget_minutes:g} min)", file=sys.stderr, flush=True)
    artifacts = {"auto (recommended)": recommended_artifact(auto, folder / "auto")}
    singles = {}
    for label, step in SINGLES[name].items():
        out = folder / label.split()[0]
        report, seconds = run_job(model_path, step, train_path, eval_path, out, job_settings)
        artifacts[label] = recommended_artifact(report, out)
        singles[label] = seconds
        print(f"  {name} {label}: {seconds:.0f} s", file=sys.stderr, flush=True)

    models = [load_model(model_path)]
    for path, runtime in artifacts.values():
        m = load_model(path)
        if runtime == "inductor":
            m.module, m.runtime = compile_for_cpu(m.module), "inductor"
        models.append(m)
    data = load_dataset(eval_path, models[0].input_spec)
    measurements, ratios = measure_models(models, data, settings)
    base = measurements[0]
    rows = []
    for label, m, r in zip(artifacts, measurements[1:], ratios[1:]):
        rows.append(
            {
                "label": label,
                "runtime": m.runtime,
                "size_ratio": r.size_ratio,
                "speedup_b1": r.speedup_b1,
                "speedup_b32": r.speedup_bN,
                "accuracy_delta": None if m.accuracy is None else m.accuracy - base.accuracy,
                "agreement": m.agreement,
                "cosine": m.cosine_similarity,
            }
        )
    step = auto["steps"][0]
    return {
        "auto_seconds": auto_s,
        "single_recipe_seconds": singles,
        "auto": {k: step[k] for k in ("within_budget", "recommendation_reason", "notes")},
        "front": [
            {
                "label": m["details"]["label"],
                "recipe": m["details"]["recipe"],
                "runtime": m["measurement"]["runtime"],
                "recommended": m["recommended"],
                "speedup_b1": m["speedup_b1"],
                "speedup_b32": m["speedup_bN"],
                "size_ratio": m["size_ratio"],
                "accuracy": m["measurement"]["accuracy"],
                "agreement": m["measurement"]["agreement"],
            }
            for m in step["front"]
        ],
        "candidates": step["search"]["candidates"],
        "search": {k: v for k, v in step["search"].items() if k != "candidates"},
        "baseline": {
            "accuracy": base.accuracy,
            "latency_ms": base.latency_ms.model_dump(),
            "size_bytes": base.size_bytes,
        },
        "rows": rows,
        "env": base.env,
    }


def quality(row: dict) -> str:
    # without labels, top-1 agreement; the output cosine says how close the whole output stays
    if row.get("accuracy_delta") is not None:
        return f"{100 * row['accuracy_delta']:+.2f} pt, cosine {row['cosine']:.4f}"
    return f"agree {row['agreement']:.4f}, cosine {row['cosine']:.4f}"


def print_model(name: str, res: dict) -> None:
    s = res["search"]
    print(
        f"\n{name}: auto took {res['auto_seconds']:.0f} s (search {s['search_s']:.0f} s, stopped: {s['stopped']}), "
        f"{len(res['candidates'])} candidates; validated on {s['validation']}"
    )
    print("  candidates (search timing):")
    for c in res["candidates"]:
        for a in c.get("artifacts") or [None]:
            figures = (
                f"drop {100 * a['accuracy_drop']:+.2f} pt, {a['speedup_b1']:.2f}x b1, {a['speedup_bN'] or 0:.2f}x b32, "
                f"{a['size_ratio']:.2f}x smaller [{a['runtime']}]{' FRONT' if a['on_front'] else ''}"
                if a
                else c.get("reason", "")
            )
            print(f"    {c['id']} {c['status']:<8} {c['label'][:70]:<70} {figures}")
    print("  Pareto front (the job's measurement; * recommended):")
    for m in res["front"]:
        q = f"acc {m['accuracy']:.4f}" if m["accuracy"] is not None else f"agree {m['agreement']:.4f}"
        print(
            f"    {'*' if m['recommended'] else ' '} {m['label'][:70]:<70} [{m['runtime']}] {m['speedup_b1']:.2f}x b1, "
            f"{m['speedup_b32'] or 0:.2f}x b32, {m['size_ratio']:.2f}x smaller, {q}"
        )
    print(
        f"  measured together (fp32 eager b1 {res['baseline']['latency_ms']['b1']['p50']:.2f} ms, "
        f"b32 {res['baseline']['latency_ms']['bN']['p50']:.1f} ms):"
    )
    for r in res["rows"]:
        print(
            f"    {r['label']:<44} [{r['runtime']:<11}] {r['speedup_b1']:.2f}x b1, {r['speedup_b32'] or 0:.2f}x b32, "
            f"{r['size_ratio']:.2f}x smaller, {quality(r)}",
            flush=True,
        )


def lost(row: dict) -> float:
    """Accuracy lost; without labels the larger of top-1 disagreement and 1 - output cosine (a random-weight
    ResNet-18 predicts nearly one class for every input, so top-1 agreement alone says little)."""
    if row["accuracy_delta"] is not None:
        return -row["accuracy_delta"]
    return max(1 - row["agreement"], 1 - row["cosine"])


def targets(results: dict) -> list[str]:
    lines = []
    for name, res in results.items():
        auto, *singles = res["rows"]
        drop = lost(auto)
        fitting = [r for r in singles if lost(r) <= BUDGET] or singles
        for label, best in (
            ("within the budget", max(fitting, key=lambda r: r["speedup_b32"] or 0)),
            ("at any accuracy", max(singles, key=lambda r: r["speedup_b32"] or 0)),
        ):
            lines.append(
                f"{name}: auto vs fastest single recipe {label} ({best['label']}, {lost(best) * 100:.2f} pt lost): "
                f"b32 {auto['speedup_b32'] / best['speedup_b32']:.2f}, "
                f"b1 {auto['speedup_b1'] / best['speedup_b1']:.2f} (>= 1.0 is at least as fast)"
            )
        lines += [
            f"{name}: auto's recommended within the 1-point budget: {drop * 100:.2f} pt lost "
            f"({'yes' if drop <= BUDGET else 'NO'})",
            f"{name}: found in <= 15 min: {res['auto_seconds'] / 60:.1f} min",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--budget-digits", type=float, default=5.0, help="auto's budget_minutes on digits")
    parser.add_argument("--budget-resnet18", type=float, default=14.0, help="auto's budget_minutes on ResNet-18")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per model and batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = MeasureSettings(batch=32, threads=args.threads, seconds_per_model=args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="squeeze-bench-auto-"))
    results = {}
    for name in args.models.split(","):
        (folder / name).mkdir()
        budget = {"digits": args.budget_digits, "resnet18": args.budget_resnet18}[name]
        results[name] = bench_model(name, folder / name, budget, settings)
        print_model(name, results[name])
    env = next(iter(results.values()))["env"]
    print(
        f"\ncpu: {env.get('cpu')} (VNNI: {env.get('cpu_vnni')}), threads: {env.get('threads')}; ratios = fp32 "
        "eager / candidate, > 1 is better"
    )
    print("\ntargets:")
    for line in targets(results):
        print("  " + line)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "auto.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
