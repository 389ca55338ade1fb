"""Runs a recipe on a model file: validate everything, run the steps, measure baseline and every
step's saved artifact together, write the report. The service's worker calls exactly this."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from .data import Dataset, check_fits, load_dataset
from .errors import EngineError, StepFailedError
from .formats import InputSpec, LoadedModel, ModelFormat, detect_format, load_model
from .formats.spec import module_device
from .measure import Measurement, MeasureSettings, Ratios, measure_models
from .measure.metrics import first_tensor
from .methods import StepContext
from .recipe import Recipe, check_recipe, parse_recipe
from .search.objective import Point, candidate_drop, recommend, speedup
from .steps import METHODS
from .steps.quantize import RECOMMEND_BUDGET

Progress = Callable[[float, str], None]
SPEEDUP_THRESHOLD = 1.05  # below 5 % a latency change is within run-to-run noise
SIZE_THRESHOLD = 1.05
HELD_OUT_FRACTION = 0.2  # of the dataset, for measuring recipes that train without an eval dataset
MIN_SAMPLES_TO_HOLD_OUT = 50


class LoadOptions(BaseModel):
    """How to read the uploaded model where its bytes do not say everything."""

    model_config = ConfigDict(extra="forbid")
    format: ModelFormat | None = None
    input_shape: list[int] | None = None
    arch: str | None = None
    arch_kwargs: dict | None = None


def run_recipe(
    model_path: str | Path,
    recipe: dict | Recipe,
    *,
    out_dir: str | Path,
    data_path: str | Path | None = None,
    eval_data_path: str | Path | None = None,
    load: LoadOptions | dict | None = None,
    settings: MeasureSettings | None = None,
    progress: Progress | None = None,
    models: dict[str, str | Path] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    on_partial: Callable[[dict], None] | None = None,
) -> dict:
    """Returns the report (DESIGN.md `results`) and writes it, with every artifact, to `out_dir`.

    `models` maps the ids of other models a step names (a distillation student) to their files.
    Training steps checkpoint into `checkpoint_dir` (default `out_dir/checkpoints`) and resume from
    what they find there; `on_checkpoint` hears of each new checkpoint file. A search step (auto) sends
    `on_partial` a report of what it has found so far after each candidate.

    A step that fails after earlier ones succeeded fails the job, but the earlier steps' artifacts are
    still measured and reported: the StepFailedError carries that report."""
    report_progress = progress or (lambda fraction, stage: None)
    settings = settings or MeasureSettings()
    load = LoadOptions.model_validate(load or {})
    model_path, out_dir = Path(model_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise EngineError("device 'cuda' was asked for but this worker has no CUDA GPU; use 'cpu'", code="no_gpu")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    threads = settings.threads or torch.get_num_threads()

    # everything that can be checked is checked before any work
    recipe = parse_recipe(recipe)
    check_recipe(recipe, load.format or detect_format(model_path), has_data=data_path is not None)
    report_progress(0.01, "loading model")
    load_kwargs = dict(load.model_dump(exclude_none=True), threads=threads, device=settings.device)
    baseline = load_model(model_path, **load_kwargs)
    data = load_dataset(data_path, baseline.input_spec) if data_path else None
    eval_data = load_dataset(eval_data_path, baseline.input_spec) if eval_data_path else data
    held_out = None
    if eval_data is data and data is not None and any(METHODS[s.method].trains(s) for s in recipe.steps):
        # a model trained on the data would be graded on what it learnt: hold part of it out
        if len(data) >= MIN_SAMPLES_TO_HOLD_OUT:
            data, eval_data = data.split(HELD_OUT_FRACTION)
            held_out = HELD_OUT_FRACTION
    spec = _settle_spec(baseline, data or eval_data)
    if data is not None or eval_data is not None:
        num_outputs = _num_outputs(baseline, spec)
        for d in {id(d): d for d in (data, eval_data) if d is not None}.values():
            check_fits(d, spec, num_outputs)

    current_path, steps_out, failure, failure_code = model_path, [], None, "step_failed"
    n = len(recipe.steps)
    for i, step in enumerate(recipe.steps, start=1):
        lo, hi = 0.05 + 0.6 * (i - 1) / n, 0.05 + 0.6 * i / n
        stage = f"step {i}/{n}: {step.method}"
        report_progress(lo, stage)
        # each step gets a fresh copy: methods may change their input in place, the baseline must not change
        original = current_path == model_path
        step_input = _load_step_input(current_path, original, load_kwargs, spec)
        ctx = StepContext(
            out_dir=out_dir,
            index=i,
            method=step.method,
            data=data,
            eval_data=eval_data,
            models={k: Path(v) for k, v in (models or {}).items()},
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints",
            on_checkpoint=on_checkpoint or (lambda path: None),
            device=settings.device,
            progress=lambda f, s, lo=lo, hi=hi, stage=stage: report_progress(lo + (hi - lo) * f, f"{stage}: {s}"),
            measure=settings,
            load_input=lambda path=current_path, original=original: _load_step_input(path, original, load_kwargs, spec),
            load_artifact=lambda path, runtime=None: _load_step_input(Path(path), False, load_kwargs, spec, runtime),
            on_partial=on_partial or (lambda report: None),
        )
        try:
            result = METHODS[step.method].runner()(step_input, step, ctx)
        except Exception as e:  # library errors too: the job fails with the reason, never a crash
            reason = e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            failure = f"step {i} ({step.method}) failed: {reason}"
            failure_code = e.code if isinstance(e, EngineError) else "step_failed"
            if not steps_out:
                raise StepFailedError(failure, code=failure_code) from None
            # the earlier steps' artifacts are measured and kept; the job fails with this step's reason
            failure += f"; the artifacts of steps 1-{i - 1} are kept" if i > 2 else "; the artifact of step 1 is kept"
            break
        steps_out.append((step, result))
        current_path = result.path
        if result.failure:  # what the step produced is measured and stored, then the job fails
            failure = f"step {i} ({step.method}) failed: {result.failure}"
            break

    report_progress(0.7, "measuring")
    # every artifact of every step (a step may offer one per runtime), measured together with the baseline
    artifacts = [r for _, result in steps_out for r in (result, *result.alternatives)]
    candidates = [_load_step_input(r.path, False, load_kwargs, spec, runtime=r.runtime) for r in artifacts]
    measurements, ratios = measure_models(
        [baseline, *candidates],
        eval_data,
        settings,
        progress=lambda f, s: report_progress(0.7 + 0.28 * f, f"measuring: {s}"),
    )
    measured = dict(zip(map(id, artifacts), zip(measurements[1:], ratios[1:])))
    for r, model in zip(artifacts, candidates):
        fallbacks = getattr(model.module, "fallback_shapes", None)
        if fallbacks:  # see quantization/pt2e.py CompiledPerShape
            r.notes.append(
                f"inductor computed wrong outputs for input shape(s) {', '.join(map(str, fallbacks))}; those ran "
                "uncompiled (dequantize -> fp32), and their latency is that of the uncompiled graph"
            )
    report = build_report(steps_out, measurements[0], measured, spec, data, eval_data)
    if held_out is not None:
        report["eval_data"]["held_out_fraction"] = held_out
    if failure:
        report["failed"] = failure
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    if failure:
        raise StepFailedError(failure, code=failure_code, report=report)
    report_progress(1.0, "done")
    return report


def _settle_spec(model: LoadedModel, data: Dataset | None) -> InputSpec:
    """The model's input spec, completed from the data for formats that do not record one."""
    if model.input_spec is None and data is not None:
        model.input_spec = InputSpec(shape=(None, *data.x.shape[1:]), dtype=data.x.dtype)
    return model.require_spec()


def _num_outputs(model: LoadedModel, spec: InputSpec) -> int | None:
    with torch.inference_mode():
        try:
            out = first_tensor(model.module(spec.example(1).to(module_device(model.module))))
        except Exception as e:
            raise StepFailedError(f"the model does not run on an input of shape {list(spec.shape)}: {e}") from None
    return int(out.shape[1]) if out.ndim == 2 else None


def _load_step_input(
    path: Path, original: bool, load_kwargs: dict, spec: InputSpec, runtime: str | None = None
) -> LoadedModel:
    if original:
        model = load_model(path, **load_kwargs)
    else:  # artifacts are pt2/onnx/torchscript: only the shape may be missing (TorchScript)
        keep = {k: load_kwargs[k] for k in ("threads", "device")}
        model = load_model(path, input_shape=[1, *[d or 1 for d in spec.sample_shape]], **keep)
    if model.input_spec is None or model.input_spec.dtype == spec.dtype:
        model.input_spec = spec if model.input_spec is None else dataclasses.replace(model.input_spec, high=spec.high)
    if runtime == "inductor":  # int8 PT2E graphs are fast only once inductor lowers them
        from .quantization.pt2e import compile_for_cpu

        model.module, model.runtime = compile_for_cpu(model.module), "inductor"
    return model


def _verdict(r: Ratios) -> str:
    speeds = [s for s in (r.speedup_b1, r.speedup_bN) if s is not None]
    faster = bool(speeds) and max(speeds) >= SPEEDUP_THRESHOLD and min(speeds) >= 1.0
    smaller = r.size_ratio >= SIZE_THRESHOLD
    return {(True, True): "faster_and_smaller", (False, True): "smaller_only", (True, False): "faster_only"}.get(
        (faster, smaller), "no_gain"
    )


def _verdict_reason(r: Ratios, m: Measurement, batch: int) -> str:
    """The measured facts behind the verdict, in words: size, then speed at each batch size."""
    size = f"{r.size_ratio:.2f}x smaller" if r.size_ratio >= SIZE_THRESHOLD else f"size ratio {r.size_ratio:.2f}x"
    speeds = [(label, s) for label, s in (("batch 1", r.speedup_b1), (f"batch {batch}", r.speedup_bN)) if s]
    parts = [f"{s:.2f}x the speed at {label}" for label, s in speeds]
    slower = [label for label, s in speeds if s < 1 / SPEEDUP_THRESHOLD]
    text = f"{size}; " + ", ".join(parts) + f" (runtime {m.runtime})"
    if slower:
        text += f"; slower than the baseline here at {' and '.join(slower)}"
    elif speeds and all(s < SPEEDUP_THRESHOLD for _, s in speeds):
        text += "; not faster than the baseline here"
    return text


def _ratio_notes(r: Ratios) -> list[str]:
    notes = []
    for label, s in (("batch 1", r.speedup_b1), ("the large batch", r.speedup_bN)):
        if s is not None and s < 1 / SPEEDUP_THRESHOLD:
            notes.append(f"slower than the baseline at {label}: {s:.2f}x")
    return notes


def _quality_drop(base: Measurement, m: Measurement) -> float | None:
    if base.accuracy is not None and m.accuracy is not None:
        return base.accuracy - m.accuracy
    return None if m.agreement is None else 1.0 - m.agreement


def _recommend(step, base: Measurement, options: list[tuple]) -> tuple:
    """Among one step's artifacts (one per runtime): the fastest whose quality drop is within the step's
    budget (max_accuracy_drop, else 1 point); if none is, the most accurate."""
    if len(options) == 1:
        return options[0]
    budget = getattr(step, "max_accuracy_drop", None) or RECOMMEND_BUDGET

    def speed(option):
        _, _, r = option
        return r.speedup_bN if r.speedup_bN is not None else (r.speedup_b1 or 0.0)

    drops = [(_quality_drop(base, option[1]), option) for option in options]
    within = [option for drop, option in drops if drop is None or drop <= budget]
    if within:
        return max(within, key=speed)
    return min(drops, key=lambda pair: pair[0])[1]


def _step_entry(step, result, m: Measurement, r: Ratios, batch: int) -> dict:
    return {
        "method": step.method,
        "params": step.model_dump(exclude={"method"}),
        "artifact_id": result.path.name,
        "format": result.format.value,
        "measurement": m.model_dump(),
        **r.model_dump(),
        "verdict": _verdict(r),
        "verdict_reason": _verdict_reason(r, m, batch),
        "notes": [*result.notes, *_ratio_notes(r)],
        **({"details": result.details} if result.details else {}),
    }


def _auto_entry(step, result, base: Measurement, options: list[tuple], batch: int) -> dict:
    """An auto step: the Pareto front measured again here, beside the baseline, and the member recommended for
    the objective within the accuracy budget (or the closest, saying so); the whole search in `search`."""
    quality = (result.details.get("search") or {}).get("quality", "accuracy")
    points = [
        Point(i, candidate_drop(quality, base, m), speedup(r.speedup_b1, r.speedup_bN), r.size_ratio)
        for i, (_, m, r) in enumerate(options)
    ]
    rec = recommend(points, step.objective, step.max_accuracy_drop)
    chosen = options[rec.point.key]

    def entry_of(option) -> dict:
        entry = _step_entry(step, *option, batch)
        if "details" in entry:  # the search's record goes once, on the step
            entry["details"] = {k: v for k, v in entry["details"].items() if k != "search"}
        return entry

    entry = entry_of(chosen)
    entry["front"] = [{**entry_of(o), "recommended": o is chosen} for o in options]
    for item in entry["front"]:
        item.pop("params")
    entry.update(
        recommended=entry["artifact_id"],
        objective=step.objective,
        within_budget=rec.within_budget,
        recommendation_reason=rec.reason,
        search=result.details.get("search"),
    )
    search_notes = (result.details.get("search") or {}).get("notes", [])
    entry["notes"] = [*chosen[0].notes, rec.reason, *search_notes, *_ratio_notes(chosen[2])]
    return entry


def build_report(
    steps_out: list,
    base: Measurement,
    measured: dict,
    spec: InputSpec,
    data: Dataset | None,
    eval_data: Dataset | None,
) -> dict:
    """`steps_out` is [(step config, StepResult)]; `measured` maps id(StepResult) to its (Measurement, Ratios)."""
    batch = base.latency_ms.batch
    steps = []
    for step, result in steps_out:
        options = [(res, *measured[id(res)]) for res in (result, *result.alternatives)]
        if step.method == "auto":
            steps.append(_auto_entry(step, result, base, options, batch))
            continue
        chosen = _recommend(step, base, options)
        entry = _step_entry(step, *chosen, batch)
        if len(options) > 1:
            entry["runtimes"] = [{**_step_entry(step, *o, batch), "recommended": o is chosen} for o in options]
            for item in entry["runtimes"]:
                item.pop("params")
            entry["recommended"] = entry["artifact_id"]
            entry["notes"].append(
                f"measured {len(options)} runtimes; recommended: {chosen[0].runtime or chosen[1].runtime}, the fastest "
                "within the accuracy budget"
            )
        steps.append(entry)
    final = steps[-1]
    final_m = final["measurement"]
    accuracy_delta = (
        final_m["accuracy"] - base.accuracy if final_m["accuracy"] is not None and base.accuracy is not None else None
    )
    return {
        "baseline": base.model_dump(),
        "steps": steps,
        "final": {
            "artifact_id": final["artifact_id"],
            "size_ratio": final["size_ratio"],
            "speedup_b1": final["speedup_b1"],
            "speedup_bN": final["speedup_bN"],
            "accuracy_delta": accuracy_delta,
            "agreement": final_m["agreement"],
            "verdict": final["verdict"],
            "verdict_reason": final["verdict_reason"],
            **({"within_budget": final["within_budget"]} if "within_budget" in final else {}),
        },
        "input": spec.to_dict(),
        "data": data.describe() if data is not None else None,
        "eval_data": eval_data.describe() if eval_data is not None and eval_data is not data else None,
    }
