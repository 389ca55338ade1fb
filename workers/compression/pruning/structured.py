"""Structured pruning: whole channels and filters removed with Torch-Pruning's dependency graph, which
keeps every coupled layer consistent (residual adds, concatenations, batch norm, depthwise convs)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..measure.metrics import count_macs

MAX_LAYER_RATIO = 0.9  # no layer loses all its channels, whatever the global ranking says


def schedule(kind: str):
    """Torch-Pruning scheduler: the cumulative ratio after each of `steps` increments."""

    def linear(ratio: float, steps: int) -> list[float]:
        return [ratio * i / steps for i in range(steps + 1)]

    def cubic(ratio: float, steps: int) -> list[float]:
        return [ratio * (1 - (1 - i / steps) ** 3) for i in range(steps + 1)]

    return cubic if kind == "cubic" else linear


def make_pruner(
    model: nn.Module,
    example: torch.Tensor,
    *,
    ratio: float,
    criterion: str,
    scope: str,
    protected: list[nn.Module],
    steps: int = 1,
    schedule_kind: str = "linear",
    ratio_per_layer: dict[nn.Module, float] | None = None,
):
    import torch_pruning as tp

    importance = (
        tp.importance.GroupTaylorImportance() if criterion == "taylor" else tp.importance.GroupMagnitudeImportance(p=2)
    )
    return tp.pruner.BasePruner(
        model,
        example,
        importance=importance,
        global_pruning=scope == "global",
        pruning_ratio=ratio,
        pruning_ratio_dict=ratio_per_layer,
        max_pruning_ratio=MAX_LAYER_RATIO,
        iterative_steps=steps,
        iterative_pruning_ratio_scheduler=schedule(schedule_kind),
        ignored_layers=protected,
    )


def ratio_for_macs(
    model: nn.Module, example: torch.Tensor, reduction: float, *, scope: str, protected_names: list[str]
) -> float:
    """The channel ratio that cuts MACs by `reduction`, found by pruning a copy in small increments."""
    trial = copy.deepcopy(model)
    protected = [trial.get_submodule(n) for n in protected_names]
    base = count_macs(trial, example) or 1
    increments = 40
    pruner = make_pruner(
        trial, example, ratio=MAX_LAYER_RATIO, criterion="magnitude", scope=scope, protected=protected, steps=increments
    )
    for i in range(1, increments + 1):
        pruner.step()
        if (count_macs(trial, example) or 0) <= (1 - reduction) * base:
            return MAX_LAYER_RATIO * i / increments
    raise ValueError(
        f"removing up to {MAX_LAYER_RATIO:.0%} of every layer's channels does not cut MACs by {reduction:.0%}"
    )


def remove_channels(model: nn.Module, example: torch.Tensor, ratio: float, kept: list[str]) -> None:
    """One-shot structured pruning (magnitude, the same ratio in every layer) that leaves `kept` whole;
    used to derive a narrower student from its teacher."""
    pruner = make_pruner(
        model,
        example,
        ratio=ratio,
        criterion="magnitude",
        scope="layer",
        protected=[model.get_submodule(n) for n in kept],
    )
    pruner.step()
