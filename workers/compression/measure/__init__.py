"""The measurement protocol (DESIGN.md): baseline and candidates measured in one process, on the same
inputs, timed interleaved; ratios are medians of per-round pairs."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..contract.measure import Latency, LatencyStats, Measurement, MeasureSettings, Ratios
from ..data import Dataset
from ..formats.spec import LoadedModel
from .metrics import count_macs, count_params, environment, first_tensor, peak_memory
from .timing import time_interleaved

__all__ = ["Latency", "LatencyStats", "MeasureSettings", "Measurement", "Ratios", "measure_models", "outputs_of"]


def _batch_input(model: LoadedModel, data: Dataset | None, batch: int, device: str) -> torch.Tensor:
    if data is not None:
        x = data.x[:batch]
        if len(x) < batch:  # small datasets are tiled up to the batch size
            x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.ndim - 1)))[:batch]
    else:
        x = model.require_spec().example(batch)
    return x.to(device)


def outputs_of(model: LoadedModel, x: torch.Tensor, batch: int, device: str) -> torch.Tensor:
    """Runs the model over `x` in batches; returns float32 outputs on the CPU."""
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(first_tensor(model.module(x[i : i + batch].to(device))).float().cpu())
    return torch.cat(outs)


def _quality(outputs: torch.Tensor, baseline: torch.Tensor | None, labels: torch.Tensor | None):
    classifier = outputs.ndim == 2 and outputs.shape[1] > 1
    accuracy = None
    if labels is not None and classifier:
        accuracy = float((outputs.argmax(1) == labels).float().mean())
    if baseline is None:
        return accuracy, None, None, None
    cosine = float(F.cosine_similarity(outputs.flatten(1), baseline.flatten(1), dim=1).mean())
    if classifier:
        return accuracy, float((outputs.argmax(1) == baseline.argmax(1)).float().mean()), "top1", cosine
    return accuracy, cosine, "cosine", cosine


def measure_models(
    models: list[LoadedModel],
    data: Dataset | None = None,
    settings: MeasureSettings | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[list[Measurement], list[Ratios]]:
    """Measures `models[0]` (the baseline) and every candidate after it.

    Returns one Measurement per model and, per model, its Ratios against the baseline
    (the baseline's own are 1.0)."""
    settings = settings or MeasureSettings()
    device = settings.device
    if settings.threads:
        torch.set_num_threads(settings.threads)
    threads = torch.get_num_threads()
    report = progress or (lambda f, s: None)
    for m in models:
        if m.runtime != "onnxruntime":
            m.module.to(device)

    report(0.0, "timing batch 1")
    inputs_b1 = [_batch_input(m, data, 1, device) for m in models]
    calls = [(lambda m=m, x=x: m.module(x)) for m, x in zip(models, inputs_b1)]
    stats_b1, ratios_b1 = time_interleaved(
        calls,
        device=device,
        warmup=settings.warmup,
        rounds=settings.rounds,
        seconds_per_model=settings.seconds_per_model,
    )

    report(0.4, f"timing batch {settings.batch}")
    inputs_bn = [_batch_input(m, data, settings.batch, device) for m in models]
    runnable = []
    for i, (m, x) in enumerate(zip(models, inputs_bn)):
        try:
            with torch.inference_mode():
                m.module(x)
            runnable.append(i)
        except Exception:  # e.g. a program exported with a fixed batch of 1
            pass
    stats_bn: list[LatencyStats | None] = [None] * len(models)
    ratios_bn: list[float | None] = [None] * len(models)
    if runnable and runnable[0] == 0:
        s, r = time_interleaved(
            [(lambda i=i: models[i].module(inputs_bn[i])) for i in runnable],
            device=device,
            warmup=settings.warmup,
            rounds=settings.rounds,
            seconds_per_model=settings.seconds_per_model,
        )
        for i, si, ri in zip(runnable, s, r):
            stats_bn[i], ratios_bn[i] = si, ri

    report(0.8, "scoring outputs")
    eval_set = data.head(settings.eval_samples) if data is not None else None
    eval_x = eval_set.x if eval_set is not None else models[0].require_spec().example(settings.batch, seed=1)
    labels = eval_set.y if eval_set is not None else None
    baseline_out = None
    env = environment(device, threads)
    measurements, ratios = [], []
    for i, m in enumerate(models):
        out = outputs_of(m, eval_x, settings.batch, device)
        accuracy, agreement, metric, cosine = _quality(out, baseline_out, labels)
        if i == 0:
            baseline_out = out
        params, nonzero = count_params(m.module)
        bn = stats_bn[i]
        measurements.append(
            Measurement(
                size_bytes=m.size_bytes,
                params=params,
                nonzero_params=nonzero,
                macs=count_macs(m.module, inputs_b1[i]),
                latency_ms=Latency(b1=stats_b1[i], bN=bn, batch=settings.batch),
                throughput_per_s=settings.batch / bn.p50 * 1000.0 if bn else None,
                peak_mem_bytes=peak_memory(m.module, inputs_bn[i], device),
                accuracy=accuracy,
                agreement=agreement,
                agreement_metric=metric,
                cosine_similarity=cosine,
                device=device,
                runtime=m.runtime,
                env=env,
            )
        )
        ratios.append(
            Ratios(
                size_ratio=models[0].size_bytes / m.size_bytes,
                speedup_b1=ratios_b1[i],
                speedup_bN=ratios_bn[i],
            )
        )
    report(1.0, "measured")
    return measurements, ratios
