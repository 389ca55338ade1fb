"""Measures every artifact of every step (a step may offer one per runtime) together with the baseline:
one process, the same inputs, interleaved timing (docs/measurement.md). Where an artifact runs on another
runtime than the uploaded model (onnxruntime, inductor), the original model, fp32, on that runtime is
timed beside them, so each such artifact reports what compression bought apart from the runtime switch."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from ..contract.formats import FILE_SUFFIX
from ..contract.measure import Measurement, MeasureSettings
from ..contract.vocabulary import Runtime
from ..formats import LoadedModel, ModelFormat, save_model
from ..measure import measure_models
from ..methods import StepOutput
from ..results import Measured
from .prepare import Prepared

MEASURE_SHARE = (0.7, 0.98)


def measure_steps(
    prepared: Prepared,
    steps: list[tuple[BaseModel, StepOutput]],
    settings: MeasureSettings,
    progress: Callable[[float, str], None],
) -> tuple[Measurement, list[tuple[BaseModel, list[Measured]]]]:
    """The baseline's measurement, and per step its artifacts measured (the step's own first)."""
    progress(MEASURE_SHARE[0], "measuring")
    outputs = [o for _, out in steps for o in (out, *out.alternatives)]
    loaded = [prepared.load_artifact(o.path, runtime=o.runtime) for o in outputs]
    scratch = outputs[0].path.parent / "runtime-baselines" if outputs else None
    runtimes = {m.runtime for m in loaded} if settings.runtime_baselines else set()
    originals, notes = runtime_baselines(prepared, runtimes, scratch, settings)
    models = [prepared.baseline, *loaded, *originals.values()]
    where = {m.runtime: 1 + len(loaded) + k for k, m in enumerate(originals.values())}
    lo, share = MEASURE_SHARE[0], MEASURE_SHARE[1] - MEASURE_SHARE[0]
    try:
        measurements, ratios = measure_models(
            models,
            prepared.eval_data,
            settings,
            progress=lambda f, s: progress(lo + share * f, f"measuring: {s}"),
            references=[None, *(where.get(m.runtime) for m in loaded), *([None] * len(originals))],
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    for o in outputs:
        o.notes.extend(notes.get(o.runtime, []))
    for o, model in zip(outputs, loaded):
        if fallbacks := getattr(model.module, "fallback_shapes", None):  # see quantization/pt2e.py CompiledPerShape
            o.notes.append(
                f"inductor computed wrong outputs for input shape(s) {', '.join(map(str, fallbacks))}; those ran "
                "uncompiled (dequantize -> fp32), and their latency is that of the uncompiled graph"
            )
    found = {id(o): Measured(o, m, r) for o, m, r in zip(outputs, measurements[1:], ratios[1:])}
    per_step = [(step, [found[id(o)] for o in (out, *out.alternatives)]) for step, out in steps]
    return measurements[0], per_step


def runtime_baselines(
    prepared: Prepared, runtimes: set[str], scratch: Path | None, settings: MeasureSettings
) -> tuple[dict[str, LoadedModel], dict[str, list[str]]]:
    """The original model, fp32, on each runtime an artifact uses that the uploaded model does not: exported
    to ONNX for onnxruntime, compiled for inductor. One that cannot be built leaves a note, not a failure."""
    originals: dict[str, LoadedModel] = {}
    notes: dict[str, list[str]] = {}
    for runtime in sorted(runtimes - {prepared.baseline.runtime}):
        try:
            if runtime in (Runtime.ONNXRUNTIME, Runtime.OPENVINO) and scratch is not None:
                scratch.mkdir(parents=True, exist_ok=True)
                original = prepared.load_original()
                fmt = ModelFormat.ONNX if runtime == Runtime.ONNXRUNTIME else ModelFormat.OPENVINO
                path = save_model(original.module, prepared.spec, fmt, scratch / f"original{FILE_SUFFIX[fmt]}")
                originals[runtime] = prepared.load_artifact(path)
            elif runtime == Runtime.INDUCTOR:
                from ..quantization.pt2e import compile_for_cpu

                original = prepared.load_original()
                original.module, original.runtime = compile_for_cpu(original.module), Runtime.INDUCTOR
                originals[runtime] = original
            if runtime in originals:  # inductor compiles on first call, and an export may fix the batch
                with torch.inference_mode():
                    for batch in (1, settings.batch):
                        originals[runtime].module(prepared.spec.example(batch).to(prepared.device))
        except Exception as e:  # the comparison is extra information; the job goes on without it
            originals.pop(runtime, None)
            reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            notes[runtime] = [f"the original model could not be run on {runtime} fp32 for a fair comparison ({reason})"]
    return originals, notes
