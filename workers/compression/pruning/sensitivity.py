"""Per-layer sensitivity: the quality when one layer alone is pruned at the target sparsity, so a user
sees which layers to exclude (and the seed's "importance = change in error" per layer, measured)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import Dataset
from ..training import outputs, quality
from . import masks
from .allocation import pruned_copy

MAX_SAMPLES = 1000
MAX_LAYERS = 200


def layer_sensitivity(
    model: nn.Module,
    names: list[str],
    *,
    kind: str,
    amount: float,
    data: Dataset,
    example: torch.Tensor,
    device: str,
) -> dict:
    sample = data.head(MAX_SAMPLES)
    reference = outputs(model, sample, device)
    base = quality(model, sample, reference, device)
    rows = []
    for name in names[:MAX_LAYERS]:
        if kind == "structured":
            trial = pruned_copy(model, example, {name: amount}, [])
        else:
            trial = copy.deepcopy(model)
            weight = trial.get_submodule(name).weight
            with torch.no_grad():
                if kind == "semi_structured_2_4":
                    weight.mul_(masks.two_four_mask(weight.abs()))
                else:
                    weight.mul_(masks.unstructured_masks({name: weight.abs()}, amount, "layer")[name])
        q = quality(trial, sample, reference, device)
        rows.append({"layer": name, "quality": round(q, 4), "drop": round(base - q, 4)})
    rows.sort(key=lambda r: r["drop"], reverse=True)
    return {
        "metric": "accuracy" if sample.y is not None else "agreement",
        "baseline": round(base, 4),
        "amount": amount,
        "criterion": "magnitude",
        "samples": len(sample),
        "layers": rows,
        "truncated": len(names) > MAX_LAYERS,
    }
