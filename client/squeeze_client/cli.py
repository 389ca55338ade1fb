"""`squeeze`: the command line, built on the SDK.

    squeeze models upload FILE [--name N] [--input-shape '[1,3,224,224]'] [--arch A [--arch-kwargs JSON]]
    squeeze datasets upload FILE [--name N]
    squeeze jobs submit --model ID (--recipe FILE | --preset NAME) [--dataset ID] [--wait]
                        [--budget-minutes N] [--max-accuracy-drop X]   (with --preset auto)
    squeeze jobs watch ID | jobs list [--status S] | jobs show ID | jobs cancel ID
    squeeze artifacts download ID [-o PATH]
    squeeze methods

Reads SQUEEZE_URL (default http://127.0.0.1:8000) and SQUEEZE_API_KEY; --url, --api-key and --json
work before or after the sub-command. Human tables by default, `--json` for scripts. Exit codes: 0 done; 1 the job failed or was cancelled; 2 bad usage (or no API
key); 3 the server refused the request (4xx: the message says why); 4 the server could not be reached
or failed (5xx).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .client import Client, Job
from .errors import ConnectionFailed, JobFailed, ServerError, SqueezeError
from .presets import PRESETS
from .speedup import Speedup

EXIT_JOB_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE = 1, 2, 3, 4


def _global_flags(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--url, --api-key and --json, on the top-level parser (with the defaults) and again on every
    sub-command (without: given there, they override), so they work before or after the sub-command."""
    kept = {} if defaults else {"default": argparse.SUPPRESS}
    url = os.environ.get("SQUEEZE_URL", "http://127.0.0.1:8000")
    parser.add_argument("--url", **({"default": url} if defaults else kept), help="default: $SQUEEZE_URL or " + url)
    parser.add_argument(
        "--api-key",
        **({"default": os.environ.get("SQUEEZE_API_KEY")} if defaults else kept),
        help="default: $SQUEEZE_API_KEY",
    )
    parser.add_argument("--json", action="store_true", **kept, help="print JSON (for scripts)")


class _Parsers(argparse._SubParsersAction):
    """Every sub-command parser gets the global flags."""

    def add_parser(self, name, **kwargs):
        parser = super().add_parser(name, **kwargs)
        _global_flags(parser, defaults=False)
        return parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="squeeze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.register("action", "parsers", _Parsers)
    _global_flags(p, defaults=True)
    sub = p.add_subparsers(dest="group", required=True)

    for kind in ("models", "datasets"):
        g = _sub(sub.add_parser(kind))
        up = g.add_parser("upload", help="upload a file and wait for its inspection")
        up.add_argument("file", type=Path)
        up.add_argument("--name")
        if kind == "models":
            up.add_argument("--input-shape", help="JSON list, e.g. '[1, 3, 224, 224]'")
            up.add_argument("--format")
            up.add_argument("--arch", help="safetensors weights: a torchvision name (resnet18) or timm:NAME")
            up.add_argument("--arch-kwargs", metavar="JSON", help="its arguments, e.g. '{\"num_classes\": 10}'")
        up.add_argument("--no-wait", action="store_true", help="return at once, status pending")
        g.add_parser("list")
        show = g.add_parser("show")
        show.add_argument("id")

    jobs = _sub(sub.add_parser("jobs"))
    submit = jobs.add_parser("submit")
    submit.add_argument("--model", required=True)
    which = submit.add_mutually_exclusive_group(required=True)
    which.add_argument("--recipe", type=Path, help="a JSON file with {'steps': [...]}")
    which.add_argument("--preset", choices=sorted(PRESETS), help="a common recipe by name")
    submit.add_argument("--dataset")
    submit.add_argument("--eval-dataset")
    submit.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    submit.add_argument("--name")
    submit.add_argument("--wait", action="store_true", help="wait for the end, with a progress bar")
    submit.add_argument("--budget-minutes", type=float, help="auto: how long the search may take (default 15)")
    submit.add_argument(
        "--max-accuracy-drop", type=float, help="auto: the accuracy budget, a fraction (0.01 = 1 point)"
    )
    for command in ("watch", "show", "cancel"):
        jobs.add_parser(command).add_argument("id")
    listing = jobs.add_parser("list")
    listing.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    listing.add_argument("--limit", type=int, default=20)

    artifacts = _sub(sub.add_parser("artifacts"))
    download = artifacts.add_parser("download")
    download.add_argument("id")
    download.add_argument("-o", "--output", type=Path, help="file or folder (default: its own name, here)")
    sub.add_parser("methods")
    return p


def _sub(parser: argparse.ArgumentParser):
    return parser.add_subparsers(dest="command", required=True, action=_Parsers)


def _with_search_options(recipe: dict, budget_minutes: float | None, max_accuracy_drop: float | None) -> dict:
    """--budget-minutes / --max-accuracy-drop set the recipe's auto step; a recipe without one is a usage error."""
    if budget_minutes is None and max_accuracy_drop is None:
        return recipe
    steps = [dict(step) for step in recipe.get("steps", [])]
    autos = [step for step in steps if step.get("method") == "auto"]
    if not autos:
        raise _UsageError("--budget-minutes and --max-accuracy-drop apply to an auto step: use --preset auto")
    for step in autos:
        if budget_minutes is not None:
            step["budget_minutes"] = budget_minutes
        if max_accuracy_drop is not None:
            step["max_accuracy_drop"] = max_accuracy_drop
    return {**recipe, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.api_key:
        print("error (no_api_key): set SQUEEZE_API_KEY or pass --api-key", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(args.url, args.api_key) as client:
            return _run(client, args)
    except JobFailed as e:
        failed = e.job
        _out(args, failed.data, lambda: _job_text(failed))
        print(f"error ({e.code}): {e.message}", file=sys.stderr)
        return EXIT_JOB_FAILED
    except (ConnectionFailed, ServerError) as e:
        print(f"error ({e.code}): {e.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except SqueezeError as e:
        print(f"error ({e.code}): {e.message}", file=sys.stderr)
        return EXIT_REFUSED
    except _UsageError as e:
        print(f"error (bad_usage): {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _run(client: Client, args) -> int:
    group, command = args.group, getattr(args, "command", None)
    if group in ("models", "datasets"):
        if command == "upload":
            if not args.file.is_file():
                print(f"error (not_found): no file {args.file}", file=sys.stderr)
                return EXIT_USAGE
            progress = not args.json and sys.stderr.isatty()
            if group == "models":
                shape = json.loads(args.input_shape) if args.input_shape else None
                arch_kwargs = _json_object("--arch-kwargs", args.arch_kwargs)
                row = client.upload_model(
                    args.file,
                    name=args.name,
                    input_shape=shape,
                    format=args.format,
                    arch=args.arch,
                    arch_kwargs=arch_kwargs,
                    wait=not args.no_wait,
                    progress=progress,
                )
            else:
                row = client.upload_dataset(args.file, name=args.name, wait=not args.no_wait, progress=progress)
            _out(args, row.data, lambda: f"{row.id}  {row.status}  {row.data['format']}  {row.data['name']}")
        elif command == "show":
            row = client.model(args.id) if group == "models" else client.dataset(args.id)
            _out(args, row.data, lambda: json.dumps(row.data, indent=2))
        else:
            items = client.get_json(f"/v1/{group}", limit=100)["items"]
            _out(args, items, lambda: _table(items, ["id", "status", "format", "size_bytes", "name"]))
        return 0
    if group == "jobs":
        if command == "submit":
            recipe = PRESETS[args.preset] if args.preset else _read_recipe(args.recipe)
            recipe = _with_search_options(recipe, args.budget_minutes, args.max_accuracy_drop)
            job = client.submit(
                args.model,
                recipe,
                dataset=args.dataset,
                eval_dataset=args.eval_dataset,
                device=args.device,
                name=args.name,
            )
            if args.wait:
                job.wait(progress=not args.json and sys.stderr.isatty())
            _out(args, job.data, lambda: _job_text(job))
            return 0
        if command == "watch":
            job = client.job(args.id).wait(progress=not args.json and sys.stderr.isatty())
            _out(args, job.data, lambda: _job_text(job))
            return 0
        if command == "show":
            job = client.job(args.id)
            _out(args, job.data, lambda: _job_text(job))
            return 0
        if command == "cancel":
            job = client.cancel(args.id)
            _out(args, job.data, lambda: f"{job.id}  {job.status}")
            return 0
        items = [j.data for j in client.jobs(status=args.status, limit=args.limit)]
        _out(args, items, lambda: _table(items, ["id", "status", "progress", "stage", "created_at"]))
        return 0
    if group == "artifacts":
        artifact = client.artifact(args.id)
        path = artifact.download(args.output, progress=not args.json and sys.stderr.isatty())
        _out(args, {**artifact.data, "path": str(path)}, lambda: f"{path}  sha256 {artifact.sha256} (verified)")
        return 0
    methods = client.methods()
    _out(args, methods, lambda: "\n".join(f"{m['method']:<10} {m['description'].splitlines()[0]}" for m in methods))
    return 0


def _json_object(option: str, text: str | None) -> dict | None:
    """An option's JSON object, or None when the option is absent; anything else is a usage error."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise _UsageError(f"{option}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise _UsageError(f"{option}: expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return value


class _UsageError(Exception):
    pass


def _read_recipe(path: Path) -> dict:
    try:
        recipe = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SqueezeError(f"cannot read the recipe {path}: {e}", code="invalid_recipe") from None
    return recipe


def _out(args, data, text) -> None:
    print(json.dumps(data, indent=2) if args.json else text())


def _table(items: list[dict], columns: list[str]) -> str:
    if not items:
        return "(none)"
    rows = [[_cell(i.get(c)) for c in columns] for i in items]
    widths = [max(len(c), *(len(r[k]) for r in rows)) for k, c in enumerate(columns)]
    line = lambda cells: "  ".join(v.ljust(w) for v, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _job_text(job: Job) -> str:
    d = job.data
    lines = [f"job {d['id']}  {d['status']}  progress {d.get('progress') or 0:.0%}  {d.get('stage') or ''}".rstrip()]
    if d.get("error"):
        lines.append(f"error ({d['error']['code']}): {d['error']['message']}")
    results = d.get("results")
    if results:
        base = results["baseline"]
        lines.append(
            f"{'':<28} {'size':>10} {'b1 p50 ms':>10} {'bN p50 ms':>10} {'speedup b1 / bN [95 %]':>34} {'quality':>9}  verdict"
        )
        lines.append(_measure_line("baseline", base, None))
        for i, step in enumerate(results["steps"], start=1):
            label = f"{i}. {step['method']} {step['params'].get('scheme') or step['params'].get('kind') or ''}"
            lines.append(_measure_line(label, step["measurement"], step))
            speed = Speedup.of(step)
            if speed.vs_runtime is not None:
                lines.append(
                    f"  vs the original on {speed.runtime} fp32: {speed.vs_runtime.text('b1')} / {speed.vs_runtime.text('bN')}"
                )
            if speed.noisy:
                lines.append(f"  noisy measurement: {'; '.join(speed.noise)}")
            if line := _generation_line(base, step):
                lines.append(line)
            for member in step.get("front", []):  # an auto step: its Pareto front, the recommended marked *
                mark = "*" if member.get("recommended") else " "
                name = f"  {mark} {member['measurement']['runtime']}: {(member.get('details') or {}).get('label', '')}"
                lines.append(_measure_line(name, member["measurement"], member))
            for runtime in step.get("runtimes", []):  # one artifact per runtime: the recommended marked *
                mark = "*" if runtime.get("recommended") else " "
                lines.append(_measure_line(f"  {mark} on {runtime['measurement']['runtime']}", runtime["measurement"], runtime))
            for peer in step.get("peers", []):  # the field's one-call recipes, measured beside
                lines.append(_measure_line(f"  peer: {peer['peer']}", peer["measurement"], peer))
            if step.get("against_peers"):
                lines.append(f"  {step['against_peers']['summary']}")
            if step.get("recommendation_reason"):
                lines.append(f"  {step['recommendation_reason']}")
    for a in d.get("artifacts") or []:
        lines.append(
            f"artifact {a['id']}  {a['format']}  {a['size_bytes']:,} bytes  ->  squeeze artifacts download {a['id']}"
        )
    return "\n".join(lines)


def _generation_line(base: dict, step: dict) -> str | None:
    """A language model's decode speed beside the original's, with the interval of the ratio."""
    g, b = step["measurement"].get("generation"), base.get("generation")
    if not g or not b:
        return None
    ratio = step.get("speedup_decode")
    lo, hi = (step.get("speedup_ci95") or {}).get("decode", (None, None))
    text = f"  decode {g['decode_tokens_per_s']:.1f} tokens/s (original {b['decode_tokens_per_s']:.1f})"
    if ratio is not None and lo is not None:
        text += f": {ratio:.2f}x [{lo:.2f}-{hi:.2f}]"
    cache = "" if g["kv_cache"] else ", no key/value cache"
    return text + f"; first token {g['ttft_ms']:.1f} ms; {g['new_tokens']} tokens after {g['prompt_tokens']}{cache}"


def _measure_line(label: str, m: dict, step: dict | None) -> str:
    """One row; a label longer than its column wraps onto lines of its own above the figures."""
    import textwrap

    lines = textwrap.wrap(label, 28) or [""]
    label = lines[-1]
    head = "".join(f"{line}\n" for line in lines[:-1])
    lat = m["latency_ms"]
    quality = m["accuracy"] if m.get("accuracy") is not None else m.get("agreement")
    speed = f"{Speedup.of(step).text('b1')} / {Speedup.of(step).text('bN')}" if step else ""
    return (
        head
        + (
            f"{label:<28} {m['size_bytes']:>10,} {(lat['b1'] or {}).get('p50', 0):>10.2f} "
            f"{(lat['bN'] or {}).get('p50', 0):>10.2f} {speed:>34} {'' if quality is None else f'{quality:.4f}':>9}  "
            f"{step['verdict'] if step else ''}"
        ).rstrip()
    )


if __name__ == "__main__":
    sys.exit(main())
