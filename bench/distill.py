"""Distillation benchmark: what knowledge distillation buys over training the same student on labels.

    .venv/bin/python bench/distill.py [--seeds 5] [--labelled 150] [--epochs 30] [--threads 2]

Teacher: the digits CNN (width 64) trained on 1400 samples. Student: the same CNN at width 8, untrained.
Each seed draws `--labelled` labelled samples (the setting where distillation matters: few labels) and
runs one `distill` job with `compare_baseline: true`, which trains the student twice from the same
initialisation, data, epochs and seed: with soft-label KD (T=4, alpha=0.9) and on the labels alone.
Both are scored on the 397 held-out samples. Prints mean ± std over seeds, the parameter ratio and the
latency ratio (from the engine's interleaved measurement). Figures land in bench/out/distill.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run_json  # noqa: E402
from tests.digits import DigitsCNN, digits_arrays, train  # noqa: E402
from workers.compression import MeasureSettings  # noqa: E402


def export(module, path: Path) -> Path:
    program = torch.export.export(
        module.eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},)
    )
    torch.export.save(program, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labelled", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--augment",
        default="off,on",
        help="off, on or both: random shifts, with the teacher labelling every shifted view",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="timing budget per model and batch size")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="squeeze-bench-distill-"))
    x, y = digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1400], order[1400:]
    torch.manual_seed(0)
    teacher = export(train(DigitsCNN(width=64), x[tr], y[tr], epochs=20), folder / "teacher.pt2")
    np.savez(folder / "test.npz", x=x[te], y=y[te])
    settings = MeasureSettings(batch=32, threads=args.threads, seconds_per_model=args.seconds, rounds=5)

    results = {}
    for mode in args.augment.split(","):
        results[f"augment_{mode}"] = run(args, folder, x, y, tr, teacher, settings, augment=mode == "on")
    out = ROOT / "bench" / "out" / "distill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


def run(args, folder: Path, x, y, tr, teacher: Path, settings: MeasureSettings, augment: bool) -> dict:
    rows = []
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        pick = rng.choice(tr, size=args.labelled, replace=False)
        np.savez(folder / f"labelled{seed}.npz", x=x[pick], y=y[pick])
        torch.manual_seed(seed)
        student = export(DigitsCNN(width=8), folder / f"student{seed}.pt2")
        step = {
            "method": "distill",
            "student": {"model_id": "student"},
            "temperature": args.temperature,
            "alpha": args.alpha,
            "augment": augment,
            "epochs": args.epochs,
            "batch_size": 32,
            "learning_rate": 3e-3,
            "validation_split": 0,
            "seed": seed,
            "compare_baseline": True,
        }
        t0 = time.monotonic()
        report = run_json(
            teacher,
            {"steps": [step]},
            data_path=folder / f"labelled{seed}.npz",
            eval_data_path=folder / "test.npz",
            models={"student": student},
            out_dir=folder / f"run{seed}",
            settings=settings,
        )
        s = report["steps"][0]
        compared = s["details"]["compare_baseline"]
        rows.append(
            {
                "seed": seed,
                "kd": compared["distilled_accuracy"],
                "labels_only": compared["labels_only_accuracy"],
                "gain": compared["gain"],
                "teacher": report["baseline"]["accuracy"],
                "params_ratio": report["baseline"]["params"] / s["measurement"]["params"],
                "speedup_b1": s["speedup_b1"],
                "speedup_b32": s["speedup_bN"],
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        r = rows[-1]
        print(
            f"seed {seed}: KD {r['kd']:.4f}  labels only {r['labels_only']:.4f}  gain {100 * r['gain']:+.2f} pt  "
            f"(teacher {r['teacher']:.4f}, {r['seconds']} s)",
            flush=True,
        )

    def stats(key):
        values = [r[key] for r in rows]
        return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    kd, plain, gain = stats("kd"), stats("labels_only"), stats("gain")
    print(
        f"\nstudent: DigitsCNN width 8, {args.labelled} labelled samples, {args.epochs} epochs, "
        f"augmentation {'on' if augment else 'off'}, {len(rows)} seeds"
    )
    print(f"  KD student          {kd[0]:.4f} ± {kd[1]:.4f}")
    print(f"  labels-only student {plain[0]:.4f} ± {plain[1]:.4f}")
    print(f"  gain                {100 * gain[0]:+.2f} ± {100 * gain[1]:.2f} pt (per-seed paired difference)")
    print(f"  teacher accuracy    {rows[0]['teacher']:.4f}")
    print(f"  params: teacher / student = {rows[0]['params_ratio']:.1f}x")
    print(
        f"  latency teacher / student: b1 {statistics.median(r['speedup_b1'] for r in rows):.2f}x, "
        f"b32 {statistics.median(r['speedup_b32'] for r in rows):.2f}x (medians over seeds)"
    )
    return {"rows": rows, "kd": kd, "labels_only": plain, "gain": gain}


if __name__ == "__main__":
    main()
