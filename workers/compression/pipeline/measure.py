"""Measures every artifact of every step (a step may offer one per runtime) together with the baseline:
one process, the same inputs, interleaved timing (DESIGN.md's protocol)."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel

from ..contract.measure import Measurement, MeasureSettings
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
    lo, share = MEASURE_SHARE[0], MEASURE_SHARE[1] - MEASURE_SHARE[0]
    measurements, ratios = measure_models(
        [prepared.baseline, *loaded],
        prepared.eval_data,
        settings,
        progress=lambda f, s: progress(lo + share * f, f"measuring: {s}"),
    )
    for o, model in zip(outputs, loaded):
        if fallbacks := getattr(model.module, "fallback_shapes", None):  # see quantization/pt2e.py CompiledPerShape
            o.notes.append(
                f"inductor computed wrong outputs for input shape(s) {', '.join(map(str, fallbacks))}; those ran "
                "uncompiled (dequantize -> fp32), and their latency is that of the uncompiled graph"
            )
    found = {id(o): Measured(o, m, r) for o, m, r in zip(outputs, measurements[1:], ratios[1:])}
    per_step = [(step, [found[id(o)] for o in (out, *out.alternatives)]) for step, out in steps]
    return measurements[0], per_step
