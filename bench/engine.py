"""Engine benchmark: every scheme on three models, measured by the engine's own protocol.

    .venv/bin/python bench/engine.py [--models digits,resnet18,transformer] [--seconds 2] [--threads 2]

For each model and recipe it prints size ratio, speedup at batch 1 and batch 32 (medians of interleaved
per-round ratios against the fp32 baseline measured in the same run) and accuracy (digits, labelled) or
agreement with the baseline (random-weight models, latency only). Figures land in bench/out/engine.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run_json  # noqa: E402
from bench.digits_example import write_digits  # noqa: E402
from workers.compression import EngineError, MeasureSettings  # noqa: E402

RECIPES = {
    "fp16": [{"method": "quantize", "scheme": "fp16"}],
    "bf16": [{"method": "quantize", "scheme": "bf16"}],
    "int8_dynamic": [{"method": "quantize", "scheme": "int8_dynamic"}],
    "onnx": [{"method": "export", "format": "onnx"}],
    "onnx+int8_dynamic": [{"method": "export", "format": "onnx"}, {"method": "quantize", "scheme": "int8_dynamic"}],
}


class TextClassifier(nn.Module):
    """A small transformer encoder (4 layers, d=256, 4 heads) over 64 tokens, with a 10-way head."""

    def __init__(self, vocab=1000, d=256, layers=4, heads=4, seq=64, classes=10):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(1, seq, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, classes)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids) + self.pos).mean(1))


def export(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(path))
    return path


def build(name: str, folder: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    if name == "digits":
        model, data, _ = write_digits(folder)
        return model, data
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None)
        np.savez(folder / "images.npz", x=torch.randn(64, 3, 224, 224).numpy())
        return export(model, torch.zeros(2, 3, 224, 224), folder / "resnet18.pt2"), folder / "images.npz"
    if name == "transformer":
        model = TextClassifier()
        np.savez(folder / "tokens.npz", x=np.random.default_rng(0).integers(0, 1000, (256, 64)))
        return export(model, torch.zeros(2, 64, dtype=torch.long), folder / "transformer.pt2"), folder / "tokens.npz"
    raise SystemExit(f"unknown model {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18,transformer")
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per model and batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    settings = MeasureSettings(batch=args.batch, threads=args.threads, seconds_per_model=args.seconds)
    results, env = {}, {}
    folder = Path(tempfile.mkdtemp(prefix="squeeze-bench-"))
    header = f"{'model':<12} {'recipe':<18} {'size':>7} {'b1':>7} {'b' + str(args.batch):>7} {'quality':>16}  verdict"
    print(header, flush=True)
    print("-" * len(header), flush=True)
    for name in args.models.split(","):
        model_path, data_path = build(name, folder)
        for recipe_name in args.recipes.split(","):
            started = time.monotonic()

            def progress(fraction, stage, where=f"{name}/{recipe_name}", t0=started):
                print(f"  [{time.monotonic() - t0:6.1f}s] {where}: {stage}", file=sys.stderr, flush=True)

            try:
                report = run_json(
                    model_path,
                    {"steps": RECIPES[recipe_name]},
                    data_path=data_path,
                    out_dir=folder / name / recipe_name,
                    settings=settings,
                    progress=progress,
                )
            except EngineError as e:
                print(f"{name:<12} {recipe_name:<18} failed: {e.message[:200]}", flush=True)
                results[f"{name}/{recipe_name}"] = {"error": e.to_dict()}
                continue
            final, base = report["final"], report["baseline"]
            last = report["steps"][-1]["measurement"]
            if base["accuracy"] is not None:
                quality = f"acc {base['accuracy']:.3f}->{last['accuracy']:.3f}"
            else:
                quality = f"{last['agreement_metric']} {last['agreement']:.3f}"
            line = (
                f"{name:<12} {recipe_name:<18} {final['size_ratio']:>6.2f}x {final['speedup_b1']:>6.2f}x "
                f"{(final['speedup_bN'] or float('nan')):>6.2f}x {quality:>16}  {final['verdict']}"
            )
            print(line, flush=True)
            env = base["env"]
            results[f"{name}/{recipe_name}"] = {
                "final": final,
                "baseline_ms": base["latency_ms"],
                "candidate_ms": last["latency_ms"],
                "runtime": last["runtime"],
                "seconds": round(time.monotonic() - started, 1),
            }
    print(
        f"\ncpu: {env.get('cpu')}, threads: {env.get('threads')}, vnni: {env.get('cpu_vnni')}, "
        f"torch {env.get('versions', {}).get('torch')}; ratios = baseline / candidate, > 1 is better"
    )
    out = ROOT / "bench" / "out" / "engine.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    # runs of a subset (--models/--recipes) update their rows and keep the others
    out.write_text(json.dumps({"env": env, "results": {**previous.get("results", {}), **results}}, indent=2))


if __name__ == "__main__":
    main()
