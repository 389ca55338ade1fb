"""Per-layer pruning ratios chosen from measured sensitivity (docs/methods.md, `scope: sensitivity`).

One global ranking of channel norms cuts the layers whose weights are small, not the layers the model can
spare: on the zoo it emptied early high-resolution convolutions first (centerface 32 -> 16 channels) and
lost the output. Here each channel group (a layer with everything coupled to it, as Torch-Pruning groups
them) is pruned alone, on a copy, at three ratios, and the output error on the job's own inputs is
measured; then ratios are handed out greedily, cheapest error per removed channel (or MAC) first, until the
step's target is met. That is NetAdapt's and AMC's idea (measured per-layer cost, a budget) without their
search loop, which costs hundreds of fine-tunings; written here because no maintained library offers it for
an arbitrary model (Torch-Pruning takes ratios, NNCF and INC dropped their filter pruning).

The error is the outputs' cosine distance to the unpruned model's (output_error), not accuracy: on the few samples a
trial can afford, top-1 moves in steps of 1/n and ranks layers by noise, while the distance is continuous
and needs no labels. The quality by the one rule is measured on the result, as for every step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..formats.spec import module_device
from ..measure.metrics import count_macs
from ..training import outputs
from .structured import MAX_LAYER_RATIO, make_pruner

MAX_GROUPS = 64  # three trials per group: beyond this (language models) the global ranking is used
TRIAL_MACS = 2e10  # multiply-adds one trial may spend on its samples: a few seconds on two cores
MIN_SAMPLES, MAX_SAMPLES = 16, 256


@dataclass
class GroupCost:
    """One channel group pruned alone: `ratios[i]` cost `errors[i]` and removed `removed[i]` of the target
    unit (channels or MACs). Ratio 0 costs nothing."""

    root: str
    ratios: list[float]
    errors: list[float]
    removed: list[float]

    def points(self) -> tuple[list[float], list[float]]:
        """(errors, removed) at ratio 0 and at each tried ratio. The errors never fall as the ratio grows:
        a lower measured error at a higher ratio is noise."""
        errors = [0.0, *self.errors]
        for i in range(1, len(errors)):
            errors[i] = max(errors[i], errors[i - 1])
        return errors, [0.0, *self.removed]


def levels(amount: float) -> list[float]:
    """The ratios each group is tried at: half the target, the target, and twice it (at most 0.9), so a
    robust group can give up to twice the average and a sensitive one nothing."""
    return sorted({round(amount / 2, 4), round(amount, 4), round(min(MAX_LAYER_RATIO, 2 * amount), 4)})


def group_roots(model: nn.Module, example: torch.Tensor, protected: list[str]) -> list[str]:
    """The layers Torch-Pruning names its channel groups by (a layer coupled to an earlier one, by a
    residual add say, is in that one's group), in the model's order."""
    trial = copy.deepcopy(model)
    pruner = make_pruner(
        trial, example, ratio=0.0, criterion="magnitude", scope="layer", protected=[trial.get_submodule(n) for n in protected]
    )
    names = {m: n for n, m in trial.named_modules()}
    groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
    return [names[g[0].dep.target.module] for g in groups if g[0].dep.target.module in names]


def trial_samples(model: nn.Module, example: torch.Tensor, data: Dataset) -> Dataset:
    macs = count_macs(model, example[:1]) or 1
    return data.head(int(max(MIN_SAMPLES, min(MAX_SAMPLES, TRIAL_MACS // macs))))


def _outputs(model: nn.Module, data: Dataset) -> torch.Tensor:
    return outputs(model, data, str(module_device(model)))


def output_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """1 - the cosine between each sample's output and the original's, averaged: 0 for the same direction,
    1 for unrelated outputs. Blind to scale on purpose: removing channels shrinks every output a little,
    which changes no class and which recovery training restores in an epoch, and a distance that counts it
    (a relative L2 error) ranked a harmless cut of the digits CNN's convolutions worst."""
    cos = torch.nn.functional.cosine_similarity(output.flatten(1).double(), reference.flatten(1).double(), dim=1)
    return float((1 - cos).mean())


def measure_groups(
    model: nn.Module,
    example: torch.Tensor,
    roots: list[str],
    protected: list[str],
    data: Dataset,
    ratios: list[float],
    *,
    by_macs: bool,
    progress: Callable[[float], None] = lambda f: None,
) -> list[GroupCost]:
    sample = trial_samples(model, example, data)
    reference = _outputs(model, sample)
    width = {n: _out_width(model.get_submodule(n)) for n in roots}
    base_macs = count_macs(model, example[:1]) or 0
    costs = []
    for i, root in enumerate(roots):
        errors, removed = [], []
        for ratio in ratios:
            trial = copy.deepcopy(model)
            pruner = make_pruner(
                trial,
                example,
                ratio=0.0,
                criterion="magnitude",
                scope="layer",
                protected=[trial.get_submodule(n) for n in protected],
                ratio_per_layer={trial.get_submodule(root): ratio},
            )
            pruner.step()
            errors.append(output_error(_outputs(trial, sample), reference))
            after = _out_width(trial.get_submodule(root))
            removed.append(base_macs - (count_macs(trial, example[:1]) or 0) if by_macs else width[root] - after)
        costs.append(GroupCost(root, list(ratios), errors, [float(r) for r in removed]))
        progress((i + 1) / len(roots))
    return costs


def _out_width(layer: nn.Module) -> int:
    return int(layer.weight.shape[0])


@dataclass(frozen=True)
class _Move:
    root: str
    to: int  # index into [0.0, *ratios]
    gain: float
    error: float


def _moves(costs: list[GroupCost], chosen: dict[str, int]) -> list[_Move]:
    moves = []
    for c in costs:
        errors, amounts = c.points()
        at = chosen[c.root]
        for to in range(at + 1, len(amounts)):
            if (gain := amounts[to] - amounts[at]) > 0:
                moves.append(_Move(c.root, to, gain, errors[to] - errors[at]))
    return moves


def _by_price(costs: list[GroupCost], chosen: dict[str, int], removed: float, target: float) -> float:
    """The error greedy-by-price adds from this state until the target is met (inf if it cannot be)."""
    chosen, added = dict(chosen), 0.0
    while removed < target:
        if not (moves := _moves(costs, chosen)):
            return float("inf")
        m = min(moves, key=lambda m: (m.error / m.gain, -m.gain))
        chosen[m.root], removed, added = m.to, removed + m.gain, added + m.error
    return added


def allocate(costs: list[GroupCost], target: float) -> dict[str, float]:
    """Ratios per group that remove at least `target` (channels or MACs, as the costs count) at the least
    summed error: a greedy answer to this multiple-choice knapsack. Each move takes one group from its ratio
    to a higher ratio it was measured at; the move with the least added error per unit removed goes first,
    unless one move that meets the target at once adds less error than going on by price would. Only
    measured ratios are chosen: with widths rounded to channel blocks, a ratio between two measured ones may
    remove nothing, or a whole block."""
    chosen = {c.root: 0 for c in costs}
    removed = 0.0
    while removed < target and (moves := _moves(costs, chosen)):
        finishing = [m for m in moves if removed + m.gain >= target]
        finish = min(finishing, key=lambda m: (m.error, -m.gain)) if finishing else None
        if finish is not None and finish.error <= _by_price(costs, chosen, removed, target):
            chosen[finish.root] = finish.to
            break
        m = min(moves, key=lambda m: (m.error / m.gain, -m.gain))
        chosen[m.root], removed = m.to, removed + m.gain
    # (every group at its highest tried ratio short of the target: as close as these groups go)
    return {c.root: c.ratios[chosen[c.root] - 1] for c in costs if chosen[c.root] > 0}


@dataclass
class Plan:
    """Ratios per group root and what a person reads about how they were chosen."""

    ratios: dict[str, float]
    details: dict
    note: str


def _macs_after(model: nn.Module, example: torch.Tensor, protected: list[str], ratios: dict[str, float]) -> int:
    trial = copy.deepcopy(model)
    pruner = make_pruner(
        trial,
        example,
        ratio=0.0,
        criterion="magnitude",
        scope="layer",
        protected=[trial.get_submodule(n) for n in protected],
        ratio_per_layer={trial.get_submodule(r): x for r, x in ratios.items()},
    )
    pruner.step()
    return count_macs(trial, example[:1]) or 0


def plan(
    model: nn.Module,
    example: torch.Tensor,
    protected: list[str],
    data: Dataset,
    *,
    sparsity: float | None,
    macs_reduction: float | None,
    progress: Callable[[float], None] = lambda f: None,
) -> Plan | None:
    """Ratios that remove `sparsity` of the prunable channels, or cut the MACs by `macs_reduction`, where the
    measured output error is least; None when the model has too many groups to try each (the caller falls
    back to the global ranking and says so)."""
    roots = group_roots(model, example, protected)
    if not roots or len(roots) > MAX_GROUPS:
        return None
    by_macs = macs_reduction is not None
    tried = levels(macs_reduction if by_macs else sparsity)
    costs = measure_groups(model, example, roots, protected, data, tried, by_macs=by_macs, progress=progress)
    if by_macs:
        base = count_macs(model, example[:1]) or 1
        goal = macs_reduction * base
        # the groups' savings overlap (a layer's output and the next layer's input are the same channels):
        # the sum over-counts, so the target is raised until the pruned copy really meets it
        target, ratios = goal, {}
        for _ in range(6):
            ratios = allocate(costs, target)
            cut = base - _macs_after(model, example, protected, ratios)
            if cut >= goal * 0.99:
                break
            target *= goal / max(cut, 1.0) * 1.02
        else:
            raise ValueError(
                f"pruning each layer up to {tried[-1]:.0%} of its channels does not cut MACs by {macs_reduction:.0%}"
            )
        aim = f"MACs cut by {macs_reduction:.0%}"
    else:
        total = sum(_out_width(model.get_submodule(r)) for r in roots)
        ratios = allocate(costs, sparsity * total)
        aim = f"{sparsity:.0%} of the channels removed"
    chosen = [ratios.get(r, 0.0) for r in roots]
    details = {
        "metric": "output error (1 - cosine to the original's outputs) with the group alone pruned",
        "samples": len(trial_samples(model, example, data)),
        "ratios_tried": tried,
        "target": aim,
        "groups": [
            {"layer": c.root, "errors": [round(e, 4) for e in c.errors], "ratio": r} for c, r in zip(costs, chosen)
        ],
    }
    spread = f"{min(chosen):.0%}-{max(chosen):.0%}"
    note = (
        f"per-layer ratios chosen from measured sensitivity ({len(roots)} channel groups, each pruned alone at "
        f"{', '.join(f'{t:.0%}' for t in tried)} on {details['samples']} samples): {spread} per group for {aim} "
        "(details.allocation)"
    )
    return Plan(ratios, details, note)
