"""Weight masks for unstructured and 2:4 pruning, applied with `torch.nn.utils.prune` (which keeps
masked weights at zero through fine-tuning) and made permanent with `prune.remove`.

Scores are |w| (magnitude) or |w * dL/dw| (first-order Taylor: the estimated change in loss when the
weight is removed). The masks are computed here rather than with `prune.global_unstructured`, which
applies its amount to the weights still unpruned: an increment of a gradual schedule must land
exactly on the schedule's total sparsity."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def scores(layers: dict[str, nn.Module], criterion: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, layer in layers.items():
        w = layer.weight.detach()
        if criterion == "taylor":
            if layer.weight.grad is None:
                raise ValueError(f"taylor scores need gradients; layer {name} has none")
            out[name] = (w * layer.weight.grad.detach()).abs()
        else:
            out[name] = w.abs()
        out[name] = out[name] * (w != 0)  # weights already pruned stay pruned
    return out


def unstructured_masks(layer_scores: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Keeps the highest-scoring weights: exactly round(sparsity * n) removed, over all layers together
    (global) or in each layer (layer)."""
    if scope == "layer":
        return {name: _keep_top(s, sparsity) for name, s in layer_scores.items()}
    flat = torch.cat([s.flatten() for s in layer_scores.values()])
    keep = _keep_top(flat, sparsity)
    masks, at = {}, 0
    for name, s in layer_scores.items():
        masks[name] = keep[at : at + s.numel()].view_as(s)
        at += s.numel()
    return masks


def _keep_top(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    n = score.numel()
    remove = int(round(sparsity * n))
    mask = torch.ones(n, dtype=torch.bool, device=score.device)
    if remove > 0:
        # stable order so ties (zeros) are broken the same way every run
        mask[torch.argsort(score.flatten(), stable=True)[:remove]] = False
    return mask.view_as(score)


def two_four_mask(score: torch.Tensor) -> torch.Tensor:
    """2:4 along the input dimension: in every group of 4 consecutive weights of a row, the 2 highest
    scores stay."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // 4, 4)
    top = groups.topk(2, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.reshape(rows, cols)


def apply_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Attaches masks (replacing earlier ones); pruned weights stay zero until `make_permanent`."""
    for name, mask in masks.items():
        layer = layers[name]
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")
        prune.custom_from_mask(layer, "weight", mask)


def make_permanent(layers: dict[str, nn.Module]) -> None:
    """Folds the masks into the weights: no weight_orig / weight_mask is left in the model."""
    for layer in layers.values():
        if prune.is_pruned(layer):
            prune.remove(layer, "weight")


def achieved_sparsity(layers: dict[str, nn.Module]) -> float:
    total = sum(layer.weight.numel() for layer in layers.values())
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers.values())
    return zeros / max(1, total)
