"""Pruning benchmark: the service's `prune` recipes beside Torch-Pruning / torch.nn.utils.prune used
directly with the same ratio, all measured together by the engine's protocol (interleaved timing).

    .venv/bin/python bench/prune.py [--models digits,resnet18] [--seconds 2] [--threads 2] [--epochs 10]

digits: the digits CNN (width 64) trained on 1400 samples and scored on the 397 held out, for accuracy.
  structured 50 % + recovery, and unstructured 90 % + recovery, against the same pruning done with the
  libraries directly and fine-tuned with the same epochs, optimiser and data.
resnet18: torchvision ResNet-18 at 224x224 with random weights, for latency: structured 50 % channels
  against Torch-Pruning's own pruner at the same ratio.
Prints size ratio, speedups at batch 1 and 32 against the unpruned model, MACs and params, and quality.
Figures land in bench/out/prune.json.
"""

from __future__ import annotations

import argparse
import copy
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
from tests.digits import DigitsCNN, digits_arrays, train  # noqa: E402
from workers.compression import MeasureSettings, load_model  # noqa: E402
from workers.compression.data import load_dataset  # noqa: E402
from workers.compression.measure import measure_models  # noqa: E402
from workers.compression.training import finetune  # noqa: E402


def export(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(path))
    return path


def tp_structured(model: nn.Module, example: torch.Tensor, ratio: float, keep: nn.Module, global_pruning: bool):
    """Torch-Pruning as its README shows it: magnitude importance, the classifier ignored."""
    import torch_pruning as tp

    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        global_pruning=global_pruning,
        ignored_layers=[keep],
    )
    pruner.step()
    return model


def torch_unstructured(model: nn.Module, sparsity: float, keep: nn.Module) -> nn.Module:
    """torch.nn.utils.prune's global L1 pruning, the usual direct route."""
    from torch.nn.utils import prune

    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not keep]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


def recover(model: nn.Module, train_path: Path, epochs: int, lr: float) -> None:
    data = load_dataset(train_path)
    finetune(model, data, epochs=epochs, learning_rate=lr, batch_size=64, device="cpu")


def row(label: str, base: dict, m: dict, r: dict) -> dict:
    quality = m["accuracy"] if m["accuracy"] is not None else m["agreement"]
    return {
        "recipe": label,
        "size_ratio": r["size_ratio"],
        "speedup_b1": r["speedup_b1"],
        "speedup_b32": r["speedup_bN"],
        "params": m["params"],
        "nonzero_params": m["nonzero_params"],
        "macs": m["macs"],
        "accuracy": m["accuracy"],
        "accuracy_delta": None if m["accuracy"] is None else m["accuracy"] - base["accuracy"],
        "quality": quality,
    }


def print_rows(model: str, base: dict, rows: list[dict]) -> None:
    print(
        f"\n{model}: baseline params {base['params']:,}, MACs {base['macs']:,}, size {base['size_bytes']:,} B"
        + (f", accuracy {base['accuracy']:.4f}" if base["accuracy"] is not None else "")
    )
    header = f"  {'recipe':<44} {'size':>7} {'b1':>7} {'b32':>7} {'params':>11} {'MACs':>13} {'acc delta':>10}"
    print(header)
    for r in rows:
        delta = "" if r["accuracy_delta"] is None else f"{100 * r['accuracy_delta']:+.2f} pt"
        print(
            f"  {r['recipe']:<44} {r['size_ratio']:>6.2f}x {r['speedup_b1']:>6.2f}x {r['speedup_b32']:>6.2f}x "
            f"{r['nonzero_params']:>11,} {r['macs'] or 0:>13,} {delta:>10}",
            flush=True,
        )


def digits(folder: Path, settings: MeasureSettings, epochs: int) -> dict:
    x, y = digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = train(DigitsCNN(width=64), x[tr], y[tr], epochs=20)
    model_path = export(net, torch.zeros(2, 1, 8, 8), folder / "digits.pt2")
    np.savez(folder / "train.npz", x=x[tr], y=y[tr])
    np.savez(folder / "test.npz", x=x[te], y=y[te])
    lr = 1e-3
    recipes = {
        "service structured 50% taylor +recovery": {
            "kind": "structured",
            "sparsity": 0.5,
            "criterion": "taylor",
            "finetune_epochs": epochs,
            "learning_rate": lr,
        },
        "service structured 50% magnitude layer +recovery": {
            "kind": "structured",
            "sparsity": 0.5,
            "scope": "layer",
            "finetune_epochs": epochs,
            "learning_rate": lr,
        },
        "service unstructured 90% 3 increments +recovery": {
            "kind": "unstructured",
            "sparsity": 0.9,
            "steps": 3,
            "finetune_epochs": max(1, epochs // 3),
            "learning_rate": lr,
        },
    }
    paths = {}
    for label, step in recipes.items():
        t0 = time.monotonic()
        report = run_json(
            model_path,
            {"steps": [{"method": "prune", **step}]},
            data_path=folder / "train.npz",
            eval_data_path=folder / "test.npz",
            out_dir=folder / label.replace(" ", "_").replace("%", ""),
            settings=MeasureSettings(batch=16, rounds=3, seconds_per_model=0.1, threads=settings.threads),
        )
        paths[label] = folder / label.replace(" ", "_").replace("%", "") / report["final"]["artifact_id"]
        print(f"  {label}: {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    # the same pruning with the libraries directly, the same recovery epochs
    direct = copy.deepcopy(net)
    tp_structured(direct, torch.zeros(1, 1, 8, 8), 0.5, direct.head[3], global_pruning=False)
    recover(direct, folder / "train.npz", epochs, lr)
    paths["Torch-Pruning direct structured 50% +recovery"] = export(direct, torch.zeros(2, 1, 8, 8), folder / "tp.pt2")
    direct = copy.deepcopy(net)
    torch_unstructured(direct, 0.9, direct.head[3])
    recover(direct, folder / "train.npz", epochs, lr)
    for m in direct.modules():
        if hasattr(m, "weight_mask"):
            torch.nn.utils.prune.remove(m, "weight")
    paths["torch.nn.utils.prune direct unstructured 90% +recovery"] = export(
        direct, torch.zeros(2, 1, 8, 8), folder / "torch_prune.pt2"
    )
    return compare("digits CNN", model_path, paths, folder / "test.npz", settings)


def resnet18(folder: Path, settings: MeasureSettings) -> dict:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    model_path = export(net, torch.zeros(2, 3, 224, 224), folder / "resnet18.pt2")
    np.savez(folder / "images.npz", x=torch.randn(64, 3, 224, 224).numpy())
    paths = {}
    service = {
        "service structured 50% magnitude layer": {"kind": "structured", "sparsity": 0.5, "scope": "layer"},
        "service structured 50% magnitude global": {"kind": "structured", "sparsity": 0.5, "scope": "global"},
        "service unstructured 90% (no recovery)": {"kind": "unstructured", "sparsity": 0.9},
    }
    for i, (label, step) in enumerate(service.items()):
        report = run_json(
            model_path,
            {"steps": [{"method": "prune", **step}]},
            out_dir=folder / f"rn_{i}",
            settings=MeasureSettings(batch=2, rounds=3, seconds_per_model=0.1, threads=settings.threads),
        )
        paths[label] = folder / f"rn_{i}" / report["final"]["artifact_id"]
    direct = copy.deepcopy(net)
    tp_structured(direct, torch.zeros(1, 3, 224, 224), 0.5, direct.fc, global_pruning=False)
    paths["Torch-Pruning direct structured 50%"] = export(direct, torch.zeros(2, 3, 224, 224), folder / "rn_tp.pt2")
    return compare("resnet18 224x224", model_path, paths, folder / "images.npz", settings)


def compare(name: str, model_path: Path, paths: dict[str, Path], data_path: Path, settings: MeasureSettings) -> dict:
    models = [load_model(model_path), *[load_model(p) for p in paths.values()]]
    data = load_dataset(data_path)
    measurements, ratios = measure_models(models, data, settings)
    base = measurements[0].model_dump()
    rows = [
        row(label, base, m.model_dump(), r.model_dump()) for label, m, r in zip(paths, measurements[1:], ratios[1:])
    ]
    print_rows(name, base, rows)
    return {
        "baseline": {k: base[k] for k in ("params", "macs", "size_bytes", "accuracy", "latency_ms")},
        "rows": rows,
        "env": base["env"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per model and batch size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10, help="recovery epochs (digits)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = MeasureSettings(batch=32, threads=args.threads, seconds_per_model=args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="squeeze-bench-prune-"))
    results = {}
    for name in args.models.split(","):
        results[name] = digits(folder, settings, args.epochs) if name == "digits" else resnet18(folder, settings)
    env = next(iter(results.values()))["env"]
    print(
        f"\ncpu: {env.get('cpu')}, threads: {env.get('threads')}; ratios = unpruned / pruned, > 1 is better; "
        "timing interleaved, medians of per-round ratios"
    )
    out = ROOT / "bench" / "out" / "prune.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
