"""`python -m workers.compression run MODEL --recipe RECIPE.json [--data D.npz] --out DIR`"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .contract.errors import EngineError
from .contract.load import LoadOptions
from .contract.measure import Generation, LatencyStats
from .contract.recipe import METHODS, catalogue
from .contract.report import Report, StepReport
from .inspection import inspect_model
from .measure import MeasureSettings
from .pipeline import run_recipe


def _json_arg(text: str):
    path = Path(text)
    try:
        return json.loads(path.read_text() if path.is_file() else text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON (nor a JSON file): {e}") from None


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _fmt(v, spec=".2f", suffix="") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def format_table(report: Report) -> str:
    """Baseline vs every step: size, latency b1/bN, speedup, accuracy/agreement, verdict."""
    base = report.baseline
    batch = base.latency_ms.batch
    head = [
        "model",
        "size",
        "ratio",
        "b1 p50 ms",
        f"b{batch} p50 ms",
        "speedup b1",
        f"speedup b{batch}",
        "accuracy",
        "agreement",
        "verdict",
    ]

    def lat(stats: LatencyStats | None) -> str:
        return _fmt(stats.p50 if stats else None, ".3f")

    rows = [
        [
            f"baseline ({base.runtime})",
            _fmt_bytes(base.size_bytes),
            "1.00x",
            lat(base.latency_ms.b1),
            lat(base.latency_ms.bN),
            "1.00x",
            "1.00x",
            _fmt(base.accuracy, ".4f"),
            "-",
            "-",
        ]
    ]
    for i, s in enumerate(report.steps, start=1):
        m = s.measurement
        rows.append(
            [
                f"{i}. {s.method} {_variant(s)} ({m.runtime})",
                _fmt_bytes(m.size_bytes),
                _fmt(s.size_ratio, ".2f", "x"),
                lat(m.latency_ms.b1),
                lat(m.latency_ms.bN),
                _fmt(s.speedup_b1, ".2f", "x"),
                _fmt(s.speedup_bN, ".2f", "x"),
                _fmt(m.accuracy, ".4f"),
                _fmt(m.agreement, ".4f"),
                s.verdict,
            ]
        )
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if base.generation:
        lines.append(f"  baseline: {_generation_text(base.generation)}")
    for i, s in enumerate(report.steps, start=1):
        if s.measurement.generation:
            ratio = f" ({_fmt(s.speedup_decode, '.2f', 'x')} the baseline's decode)" if s.speedup_decode else ""
            lines.append(f"  step {i}: {_generation_text(s.measurement.generation)}{ratio}")
        for note in s.notes:
            lines.append(f"  step {i}: {note}")
    return "\n".join(lines)


def _generation_text(g: Generation) -> str:
    cache = "" if g.kv_cache else ", no key/value cache"
    return (
        f"decode {g.decode_tokens_per_s:.1f} tokens/s, prefill {g.prefill_tokens_per_s:.0f} tokens/s, first token "
        f"{g.ttft_ms:.1f} ms ({g.new_tokens} tokens after {g.prompt_tokens}{cache})"
    )


def _variant(step: StepReport) -> str:
    """What tells a step from its siblings: a quantization's scheme, a pruning's kind, an export's format."""
    method = METHODS.get(step.method)
    value = (step.params or {}).get(method.variants[0], "") if method else ""
    return value if isinstance(value, str) else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.compression", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a recipe on a model file and measure the result")
    run.add_argument("model", type=Path)
    run.add_argument("--recipe", required=True, type=_json_arg, help="a JSON file or inline JSON")
    run.add_argument("--data", type=Path, help="dataset for calibration/training and, unless --eval-data, scoring")
    run.add_argument("--eval-data", type=Path)
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--arch", help="architecture for safetensors weights, e.g. resnet18 or timm:resnet18")
    run.add_argument("--arch-kwargs", type=_json_arg)
    run.add_argument("--input-shape", type=_json_arg, help="e.g. [1,3,224,224]")
    run.add_argument("--batch", type=int, default=32)
    run.add_argument("--threads", type=int)
    run.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    run.add_argument("--seconds", type=float, default=2.0, help="timing budget per model and batch size")
    run.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")

    inspect = sub.add_parser("inspect", help="load a model and print its format and input")
    inspect.add_argument("model", type=Path)
    inspect.add_argument("--arch")
    inspect.add_argument("--arch-kwargs", type=_json_arg)
    inspect.add_argument("--input-shape", type=_json_arg)

    sub.add_parser("methods", help="print the method catalogue as JSON")
    args = parser.parse_args(argv)

    try:
        if args.command == "methods":
            print(json.dumps(catalogue(), indent=2))
        elif args.command == "inspect":
            info = inspect_model(args.model, arch=args.arch, arch_kwargs=args.arch_kwargs, input_shape=args.input_shape)
            print(info.model_dump_json(exclude_none=True))
        else:
            load = LoadOptions(input_shape=args.input_shape, arch=args.arch, arch_kwargs=args.arch_kwargs)
            settings = MeasureSettings(
                batch=args.batch, threads=args.threads, device=args.device, seconds_per_model=args.seconds
            )
            started = time.monotonic()

            def progress(fraction: float, stage: str) -> None:
                print(f"[{time.monotonic() - started:6.1f}s {fraction:4.0%}] {stage}", file=sys.stderr)

            report = run_recipe(
                args.model,
                args.recipe,
                out_dir=args.out,
                data_path=args.data,
                eval_data_path=args.eval_data,
                load=load,
                settings=settings,
                progress=progress,
            )
            print(report.model_dump_json(indent=2) if args.json else format_table(report))
            print(f"artifacts and report.json in {args.out}", file=sys.stderr)
    except EngineError as e:
        print(f"error ({e.code}): {e.message}", file=sys.stderr)
        return 2
    return 0
