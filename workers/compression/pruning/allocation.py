"""Per-layer pruning ratios chosen from measured sensitivity (README, `prune` options: `scope: sensitivity`).

One global ranking of channel norms cuts the layers whose weights are small, not the layers the model can
spare: on the zoo it emptied early high-resolution convolutions first (centerface 32 -> 16 channels) and
lost the output. Here each channel group (a layer with everything coupled to it, as Torch-Pruning groups
them) is pruned alone, on a copy, at three ratios, and the output error on the job's own inputs is
measured; then ratios are handed out greedily, cheapest error per removed channel (or MAC) first, until the
step's target is met. That is NetAdapt's and AMC's idea (measured per-layer cost, a budget) without their
search loop, which costs hundreds of fine-tunings; written here because no maintained library offers it for
an arbitrary model (Torch-Pruning takes ratios, NNCF and INC dropped their filter pruning).

The error is the outputs' cosine distance to the unpruned model's (output_error, the worst output), not
accuracy: on the few samples a trial can afford, top-1 moves in steps of 1/n and ranks layers by noise,
while the distance is continuous and needs no labels. The quality by the one rule is measured on the result,
as for every step. Trials prune by magnitude in one go; the step itself may rank by Taylor scores or prune in
increments: the widths are the same, the channels removed may differ."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..data import Dataset
from ..formats.spec import module_device
from ..measure.metrics import count_macs, outputs_over
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
    """The ratios each group is tried at: half the target, the target, and twice it (each at most 0.9, as
    Torch-Pruning caps a layer), so a robust group can give up to twice the average and a sensitive one
    nothing."""
    return sorted({round(min(MAX_LAYER_RATIO, f * amount), 4) for f in (0.5, 1.0, 2.0)})


def group_roots(model: nn.Module, example: torch.Tensor, protected: list[str]) -> list[str]:
    """The Conv and Linear layers Torch-Pruning names its channel groups by (a layer coupled to an earlier
    one, by a residual add say, is in that one's group), in the model's order."""
    trial = copy.deepcopy(model)
    pruner = make_pruner(
        trial, example, ratio=0.0, criterion="magnitude", scope="layer", protected=[trial.get_submodule(n) for n in protected]
    )
    names = {m: n for n, m in trial.named_modules()}
    groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
    roots = [g[0].dep.target.module for g in groups]
    return [names[m] for m in roots if m in names and _out_width(m) is not None]


def _out_width(layer: nn.Module) -> int | None:
    """Output channels of a Conv (ConvTranspose included: its weight holds the inputs first) or Linear."""
    width = getattr(layer, "out_channels", None) or getattr(layer, "out_features", None)
    return int(width) if isinstance(width, int) else None


def pruned_copy(model: nn.Module, example: torch.Tensor, ratios: dict[str, float], protected: list[str]) -> nn.Module:
    """A copy of `model` with each named group pruned by magnitude at its own ratio and the rest whole."""
    trial = copy.deepcopy(model)
    pruner = make_pruner(
        trial,
        example,
        ratio=0.0,
        criterion="magnitude",
        scope="layer",
        protected=[trial.get_submodule(n) for n in protected],
        ratio_per_layer={trial.get_submodule(n): r for n, r in ratios.items()},
    )
    pruner.step()
    return trial


def trial_samples(model: nn.Module, example: torch.Tensor, data: Dataset) -> Dataset:
    """As many of the job's samples as a trial can afford: the MACs budget over the model's MACs per
    sample, between 16 and 256, spread over the data (not its first rows, which may be one class)."""
    macs = count_macs(model, example[:1]) or 1
    n = min(len(data.x), int(max(MIN_SAMPLES, min(MAX_SAMPLES, TRIAL_MACS // macs))))
    return data.subset(torch.linspace(0, len(data.x) - 1, n).round().long().unique())


def _outputs(model: nn.Module, data: Dataset) -> list[torch.Tensor]:
    """Every output of the model over the samples, float32 on the CPU."""
    return outputs_over(model.eval(), data.x, 256, str(module_device(model)))


def output_error(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """1 - the cosine between each sample's output and the original's, averaged over samples, the worst
    output of several: 0 for the same direction, 1 for orthogonal outputs, 2 for opposite ones; infinite
    when an output changed shape (that ratio is never chosen). Blind to scale on purpose: removing channels
    shrinks every output a little, which changes no class and which recovery training restores in an epoch,
    and a distance that counts it (a relative L2 error) ranked a harmless cut of the digits CNN's
    convolutions worst."""
    if len(outputs) != len(reference) or any(o.shape != r.shape for o, r in zip(outputs, reference)):
        return float("inf")
    worst = 0.0
    for out, ref in zip(outputs, reference):
        cos = torch.nn.functional.cosine_similarity(out.flatten(1).double(), ref.flatten(1).double(), dim=1)
        worst = max(worst, float((1 - cos).mean()))
    return worst


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
    """Each group pruned alone at each ratio: its error and what it removed. A trial that fails (a layer
    whose width something else hard-codes) costs an infinite error, so that ratio is never chosen."""
    sample = trial_samples(model, example, data)
    reference = _outputs(model, sample)
    base_macs = _macs(model, example)
    costs = []
    for i, root in enumerate(roots):
        errors, removed = [], []
        width = _out_width(model.get_submodule(root))
        for ratio in ratios:
            try:
                trial = pruned_copy(model, example, {root: ratio}, protected)
                errors.append(output_error(_outputs(trial, sample), reference))
                gone = base_macs - _macs(trial, example) if by_macs else width - _out_width(trial.get_submodule(root))
            except Exception:  # Torch-Pruning's own errors (IndexError, shape mismatches) name no layer
                errors.append(float("inf"))
                gone = 0
            removed.append(float(gone))
        costs.append(GroupCost(root, list(ratios), errors, removed))
        progress((i + 1) / len(roots))
    return costs


def _macs(model: nn.Module, example: torch.Tensor) -> int:
    macs = count_macs(model, example[:1])
    if not macs:
        raise ValueError("the model's MACs cannot be counted, so a MACs target cannot be planned for it")
    return macs


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
            if (gain := amounts[to] - amounts[at]) > 0 and errors[to] != float("inf"):
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
        finish = min(finishing, key=lambda m: (m.error, m.gain)) if finishing else None  # least overshoot
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


def removed_by(costs: list[GroupCost], ratios: dict[str, float]) -> float:
    """What the chosen ratios remove, by the trials' count (the same unit as the target)."""
    total = 0.0
    for c in costs:
        if c.root in ratios:
            total += c.removed[c.ratios.index(ratios[c.root])]
    return total


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
    back to the global ranking and says so). ValueError when no group can lose anything, or a MACs target
    is out of reach of every group at its highest tried ratio."""
    roots = group_roots(model, example, protected)
    if not roots:
        raise ValueError("no channel group of this model can be pruned (every layer is kept whole)")
    if len(roots) > MAX_GROUPS:
        return None
    by_macs = macs_reduction is not None
    tried = levels(macs_reduction if by_macs else sparsity)
    costs = measure_groups(model, example, roots, protected, data, tried, by_macs=by_macs, progress=progress)
    if all(g == 0 or e == float("inf") for c in costs for g, e in zip(c.removed, c.errors)):
        raise ValueError(
            f"no channel group can lose channels at {', '.join(f'{t:.0%}' for t in tried)} (each width is rounded "
            "to whole channel blocks, and a layer keeps at least one): prune a larger share, or fewer layers"
        )
    if by_macs:
        base = _macs(model, example)
        goal = macs_reduction * base
        ceiling = {c.root: c.ratios[max(i for i, e in enumerate(c.errors) if e != float("inf"))] for c in costs
                   if any(e != float("inf") for e in c.errors)}
        # the groups' savings overlap (a layer's output and the next layer's input are the same channels):
        # their sum over-counts, so the target is raised until a pruned copy really meets the goal
        target, ratios, cut = goal, {}, 0
        for _ in range(6):
            ratios = allocate(costs, target)
            cut = base - _macs(pruned_copy(model, example, ratios, protected), example)
            if cut >= goal * 0.99 or ratios == ceiling:
                break
            target *= goal / max(cut, 1.0) * 1.02
        if cut < goal * 0.99:
            ratios = ceiling  # the most these trials allow: does even that reach the goal?
            cut = base - _macs(pruned_copy(model, example, ratios, protected), example)
            if cut < goal * 0.99:
                raise ValueError(
                    f"pruning each channel group up to {tried[-1]:.0%} cuts MACs by {cut / base:.0%}, not "
                    f"{macs_reduction:.0%}"
                )
        aim, achieved = f"MACs cut by {macs_reduction:.0%}", f"MACs cut by {cut / base:.1%}"
    else:
        total = sum(_out_width(model.get_submodule(r)) for r in roots)
        ratios = allocate(costs, sparsity * total)
        aim, share = f"{sparsity:.0%} of the channels removed", removed_by(costs, ratios) / total
        achieved = f"{share:.1%} of the channels removed" + (
            " (short of the target: no group could give more at the ratios tried)" if share < sparsity - 1e-9 else ""
        )
    chosen = [ratios.get(r, 0.0) for r in roots]
    samples = len(trial_samples(model, example, data))
    details = {
        "metric": "output error: 1 - cosine to the original's outputs (the worst output), the group alone pruned",
        "samples": samples,
        "ratios_tried": tried,
        "target": aim,
        "achieved": achieved,
        "groups": [
            {"layer": c.root, "errors": [None if e == float("inf") else round(e, 4) for e in c.errors], "ratio": r}
            for c, r in zip(costs, chosen)
        ],
    }
    note = (
        f"per-group ratios chosen from measured sensitivity ({len(roots)} channel groups, each pruned alone at "
        f"{', '.join(f'{t:.0%}' for t in tried)} on {samples} samples): {min(chosen):.0%}-{max(chosen):.0%} per "
        f"group for {aim}; {achieved} (details.allocation)"
    )
    return Plan(ratios, details, note)
