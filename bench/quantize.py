"""Quantization benchmark: every `quantize` scheme the service offers beside the int8 peers a user would
reach for directly, all measured together by the engine's protocol (one process, interleaved timing,
2 threads, ratios against the fp32 model run eagerly).

    .venv/bin/python bench/quantize.py [--models digits,resnet18,encoder] [--seconds 2] [--threads 2]

Peers, applied to the same fp32 model and calibration data:
  ORT static int8: torch.onnx export -> onnxruntime's quant_pre_process -> quantize_static (QDQ,
    per-channel s8 weights, u8 activations, reduce_range on CPUs without VNNI), run in onnxruntime.
  NNCF: nncf.quantize on the same fp32 ONNX model (its default min-max + fast bias correction), run in
    onnxruntime (the OpenVINO runtime is not installed here). Installed by `make bench-quantize`.

digits: the digits CNN (width 64) trained on 1400 samples, scored on the 397 held out (accuracy).
resnet18: torchvision ResNet-18 at 224x224, random weights, random calibration images (latency, agreement).
encoder: a BERT-like encoder from transformers (hidden 256, 4 layers, 128 tokens), random weights (latency,
  agreement with fp32).
Figures land in bench/out/quantize.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
from workers.compression.formats import ModelFormat, save_model  # noqa: E402
from workers.compression.hardware import cpu_has_vnni  # noqa: E402
from workers.compression.measure import measure_models  # noqa: E402
from workers.compression.quantization.pt2e import compile_for_cpu  # noqa: E402

SCHEMES = {
    "digits": [
        {"scheme": "int8_static"},
        {"scheme": "int8_qat", "finetune_epochs": 2, "learning_rate": 1e-4},
        {"scheme": "int8_dynamic"},
        {"scheme": "int8_weight_only"},
        {"scheme": "int4_weight_only"},
        {"scheme": "fp16"},
        {"scheme": "binary", "finetune_epochs": 10, "learning_rate": 1e-3},
        {"scheme": "ternary", "finetune_epochs": 10, "learning_rate": 1e-3},
    ],
    "resnet18": [
        {"scheme": "int8_static", "calibration_batches": 4},
        {"scheme": "int4_weight_only"},
        {"scheme": "binary"},
    ],
    "encoder": [
        {"scheme": "int8_static", "calibration_batches": 4},
        {"scheme": "int8_dynamic"},
        {"scheme": "int8_weight_only"},
    ],
}
INT8 = ("int8_static", "int8_qat", "int8_dynamic", "ORT static int8 (direct)", "NNCF (ONNX, onnxruntime)")


def export(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    program = torch.export.export(module.eval(), (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(path))
    return path


# ---------------------------------------------------------------- models


def digits_model(folder: Path) -> tuple[Path, Path, Path, dict]:
    x, y = digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1400], order[1400:]
    torch.manual_seed(0)
    net = train(DigitsCNN(width=64), x[tr], y[tr], epochs=20)
    np.savez(folder / "train.npz", x=x[tr], y=y[tr])
    np.savez(folder / "test.npz", x=x[te], y=y[te])
    return export(net, torch.zeros(2, 1, 8, 8), folder / "digits.pt2"), folder / "train.npz", folder / "test.npz", {}


def resnet18_model(folder: Path, calibration_images: int = 128) -> tuple[Path, Path, Path, dict]:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    np.savez(folder / "calib.npz", x=torch.randn(calibration_images, 3, 224, 224).numpy())
    np.savez(folder / "images.npz", x=torch.randn(64, 3, 224, 224).numpy())
    path = export(net, torch.zeros(2, 3, 224, 224), folder / "resnet18.pt2")
    return path, folder / "calib.npz", folder / "images.npz", {}


def encoder_model(folder: Path) -> tuple[Path, Path, Path, dict]:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8000,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=128,
        num_labels=4,
    )
    model = BertForSequenceClassification(config).eval()
    hf = folder / "bert"
    model.save_pretrained(hf)
    archive = Path(shutil.make_archive(str(folder / "bert"), "zip", folder, "bert"))
    rng = np.random.default_rng(0)
    np.savez(folder / "tokens_calib.npz", x=rng.integers(0, 8000, (128, 128)))
    np.savez(folder / "tokens.npz", x=rng.integers(0, 8000, (64, 128)))
    return archive, folder / "tokens_calib.npz", folder / "tokens.npz", {"input_shape": [1, 128]}


# ---------------------------------------------------------------- peers


def fp32_onnx(model_path: Path, load: dict, folder: Path) -> Path:
    model = load_model(model_path, **load)
    return save_model(model.module, model.require_spec(), ModelFormat.ONNX, folder / "peer_fp32.onnx")


def calibration_batches(data_path: Path, count: int = 4, batch: int = 32) -> list[np.ndarray]:
    x = np.load(data_path)["x"]
    return [x[i : i + batch] for i in range(0, min(len(x), count * batch), batch)]


def ort_static(source: Path, batches: list[np.ndarray], folder: Path) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = folder / "peer_pre.onnx"
    quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
    name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(batches)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {name: x}

    target = folder / "peer_ort_static.onnx"
    quantize_static(
        str(pre),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=not cpu_has_vnni(),
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return target


def nncf_quantize(source: Path, batches: list[np.ndarray], folder: Path) -> Path | str:
    try:
        import nncf
        import onnx
    except ImportError:
        return "nncf is not installed: run `make install` (it is one of the service's dependencies)"
    model = onnx.load(str(source))
    name = model.graph.input[0].name
    quantized = nncf.quantize(model, nncf.Dataset(batches, lambda x: {name: x}), subset_size=len(batches))
    target = folder / "peer_nncf.onnx"
    onnx.save(quantized, str(target))
    return target


# ---------------------------------------------------------------- one model


def bench_model(name: str, folder: Path, settings: MeasureSettings) -> dict:
    model_path, calib_path, eval_path, load = {
        "digits": digits_model,
        "resnet18": resnet18_model,
        "encoder": encoder_model,
    }[name](folder)
    candidates: dict[str, tuple[Path, str]] = {}  # label -> (artifact, runtime)
    details: dict[str, dict] = {}
    for step in SCHEMES[name]:
        label = step["scheme"] + ("+STE" if step.get("finetune_epochs") and step["scheme"] != "int8_qat" else "")
        out = folder / label
        t0 = time.monotonic()
        report = run_json(
            model_path,
            {"steps": [{"method": "quantize", **step}]},
            data_path=calib_path,
            eval_data_path=eval_path,
            out_dir=out,
            load=load,
            # the job measures at the bench's batch, as a job with default settings does: its recommendation
            # rests on this measurement
            settings=MeasureSettings(batch=settings.batch, rounds=5, seconds_per_model=1.0, threads=settings.threads),
        )
        entry = report["steps"][0]
        for r in entry.get("runtimes", [entry]):
            runtime = r["measurement"]["runtime"]
            key = f"{label} [{runtime}]" + (" *" if r.get("recommended") else "")
            candidates[key] = (out / r["artifact_id"], runtime)
            details[key] = r.get("details") or entry.get("details") or {}
        print(f"  {name} {label}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    onnx_fp32 = fp32_onnx(model_path, load, folder)
    batches = calibration_batches(calib_path)
    candidates["ORT static int8 (direct)"] = (ort_static(onnx_fp32, batches, folder), "onnxruntime")
    nncf_out = nncf_quantize(onnx_fp32, batches, folder)
    if isinstance(nncf_out, Path):
        candidates["NNCF (ONNX, onnxruntime)"] = (nncf_out, "onnxruntime")
    else:
        print(f"  NNCF skipped: {nncf_out}", file=sys.stderr)

    models = [load_model(model_path, **load)]
    for path, runtime in candidates.values():
        m = load_model(path)
        if runtime == "inductor":
            m.module, m.runtime = compile_for_cpu(m.module), "inductor"
        models.append(m)
    data = load_dataset(eval_path, models[0].input_spec)
    measurements, ratios = measure_models(models, data, settings)
    base = measurements[0].model_dump()
    rows = []
    for label, m, r in zip(candidates, measurements[1:], ratios[1:]):
        m = m.model_dump()
        rows.append(
            {
                "label": label,
                "runtime": m["runtime"],
                "size_ratio": r.size_ratio,
                "speedup_b1": r.speedup_b1,
                "speedup_b32": r.speedup_bN,
                "accuracy_delta": None if m["accuracy"] is None else m["accuracy"] - base["accuracy"],
                "agreement": m["agreement"],
                "quantized_weights_ratio": (details.get(label, {}).get("quantized_weights") or {}).get("ratio"),
            }
        )
    print_rows(name, base, rows)
    return {
        "baseline": {k: base[k] for k in ("params", "size_bytes", "accuracy", "latency_ms")},
        "rows": rows,
        "env": base["env"],
        "nncf": None if isinstance(nncf_out, Path) else nncf_out,
    }


def print_rows(name: str, base: dict, rows: list[dict]) -> None:
    print(
        f"\n{name}: fp32 {base['size_bytes']:,} B, b1 {base['latency_ms']['b1']['p50']:.2f} ms, "
        f"b32 {base['latency_ms']['bN']['p50']:.1f} ms"
        + (f", accuracy {base['accuracy']:.4f}" if base["accuracy"] is not None else "")
    )
    print(f"  {'scheme [runtime] (* recommended)':<44} {'size':>7} {'b1':>7} {'b32':>7} {'acc delta':>10} {'agree':>7}")
    for r in rows:
        delta = "" if r["accuracy_delta"] is None else f"{100 * r['accuracy_delta']:+.2f} pt"
        layers = (
            f"  quantized layers {r['quantized_weights_ratio']:.1f}x smaller" if r["quantized_weights_ratio"] else ""
        )
        print(
            f"  {r['label']:<44} {r['size_ratio']:>6.2f}x {r['speedup_b1']:>6.2f}x {r['speedup_b32'] or 0:>6.2f}x "
            f"{delta:>10} {r['agreement'] or 0:>7.4f}{layers}",
            flush=True,
        )


def targets(results: dict) -> list[str]:
    lines = []
    digits = results.get("digits")
    if digits:
        static = [r for r in digits["rows"] if r["label"].startswith("int8_static")]
        lines.append(
            "int8_static accuracy drop <= 0.5 pt on digits: "
            + ", ".join(f"{r['label']} {100 * r['accuracy_delta']:+.2f} pt" for r in static)
        )
    for name, res in results.items():
        int8 = [r for r in res["rows"] if r["label"].startswith(INT8)]
        lines.append(
            f"{name}: int8 artifacts >= 3.5x smaller: "
            + ", ".join(f"{r['label']} {r['size_ratio']:.2f}x" for r in int8)
        )
        recommended = [r for r in res["rows"] if r["label"].endswith("*") and r["label"].startswith("int8_static")]
        peers = [r for r in res["rows"] if r["label"].startswith(("ORT static", "NNCF"))]
        if recommended and peers:
            best = max(peers, key=lambda r: r["speedup_b32"] or 0)
            rec = recommended[0]
            lines.append(
                f"{name}: recommended int8 latency vs best peer ({best['label']}) at b32: "
                f"{rec['speedup_b32'] / best['speedup_b32']:.2f} (>= 1.0 is at least as fast); "
                f"b1: {rec['speedup_b1'] / best['speedup_b1']:.2f}"
            )
        if name == "resnet18" and recommended:
            lines.append(f"resnet18 int8 >= 3x faster than fp32 eager at b32: {recommended[0]['speedup_b32']:.2f}x")
        for r in res["rows"]:
            if r["label"].startswith("binary") and r["quantized_weights_ratio"]:
                lines.append(
                    f"{name}: {r['label']} quantized layers >= 20x smaller: {r['quantized_weights_ratio']:.1f}x"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet18,encoder")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per model and batch size")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = MeasureSettings(batch=32, threads=args.threads, seconds_per_model=args.seconds)
    folder = Path(tempfile.mkdtemp(prefix="squeeze-bench-quantize-"))
    results = {}
    for name in args.models.split(","):
        (folder / name).mkdir()
        results[name] = bench_model(name, folder / name, settings)
    env = next(iter(results.values()))["env"]
    print(
        f"\ncpu: {env.get('cpu')} (VNNI: {env.get('cpu_vnni')}), threads: {env.get('threads')}; ratios = fp32 eager / "
        "candidate, > 1 is better; timing interleaved, medians of per-round ratios"
    )
    print("\ntargets:")
    for line in targets(results):
        print("  " + line)
    out = ROOT / "bench" / "out" / "quantize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
