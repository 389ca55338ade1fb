"""`prune`: remove weights (unstructured, 2:4) or whole channels (structured), in one go or over a
gradual schedule with recovery fine-tuning between increments."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..contract.errors import RecipeError, StepFailedError
from ..contract.recipe.layers import unmatched_exclude
from ..contract.recipe.prune import PruneStep, output_format
from ..contract.vocabulary import Device
from ..data import Dataset
from ..formats import LoadedModel, ModelFormat, save_model
from ..formats.onnx_torch import ConvertedOnnx
from ..formats.spec import module_device
from ..measure.metrics import count_macs, count_params
from ..pruning import allocation, masks
from ..pruning.layers import always_kept, attention_heads, editable, prunable_layers
from ..pruning.sensitivity import layer_sensitivity
from ..pruning.storage import pack_sparse_layers
from ..pruning.structured import (
    SMALLEST_BLOCK,
    channel_block,
    make_pruner,
    ratio_for_macs,
    role_summary,
    schedule,
    unchanged_layers,
    unprunable_layers,
    weight_shapes,
)
from ..step import StepContext, StepOutput
from ..training import BestEpoch, accumulate_gradients, finetune, outputs, quality

TAYLOR_BATCHES = 8  # gradient batches for Taylor scores: enough to rank weights, cheap next to training


def prune(model: LoadedModel, step: PruneStep, ctx: StepContext) -> StepOutput:
    if (reason := step.needs_data()) and ctx.data is None:
        raise RecipeError(f"{reason}; give the job a dataset")
    spec = model.require_spec()
    module = editable(model).to(ctx.device)
    example = (ctx.data.x[:2] if ctx.data is not None else spec.example(2)).to(ctx.device)
    layers = dict(prunable_layers(module))
    if model.format == ModelFormat.ONNX and (unmatched := unmatched_exclude(step.exclude, list(layers))):
        raise RecipeError(unmatched)  # an ONNX upload's layer names exist only once converted: checked here
    kept, notes = always_kept(model, module, example, structured=step.kind == "structured")
    protected = {n for n in layers if step.excluded(n)} | kept
    eligible = {n: m for n, m in layers.items() if n not in protected}
    if step.kind == "semi_structured_2_4":
        eligible = {n: m for n, m in eligible.items() if isinstance(m, nn.Linear) and m.in_features % 4 == 0}
    if not eligible:
        raise RecipeError(
            f"nothing to prune: of the layers {sorted(layers)}, {sorted(protected)} are kept "
            "(excluded, or the output layer)"
            + (" and 2:4 needs Linear layers with a multiple of 4 inputs" if step.kind == "semi_structured_2_4" else "")
        )
    params_before, _ = count_params(module)
    macs_before = count_macs(module, example[:1])
    details = {"kept_whole": sorted(protected)}
    if step.sensitivity:
        ctx.progress(0.0, "sensitivity per layer")
        details["sensitivity"] = layer_sensitivity(
            module,
            list(eligible),
            kind=step.kind,
            amount=step.amount,
            data=ctx.data,
            example=example,
            device=ctx.device,
        )
    # without labels, recovery distils from the model as it was before pruning
    recovery = Recovery.of(module, step, ctx, spec.vocabulary)
    run = {"structured": _structured, "unstructured": _unstructured, "semi_structured_2_4": _two_four}[step.kind]
    if step.kind == "structured":
        eligible, protected = _drop_unprunable(module, step, ctx, eligible, protected, example, details, notes)
        if step.scope == "sensitivity":
            run = partial(_structured, ratios=_sensitivity_plan(module, step, ctx, protected, example, details, notes))
    notes += run(module, step, ctx, eligible, protected, example, recovery)
    module.eval()

    params_after, nonzero_after = count_params(module)
    macs_after = count_macs(module, example[:1])
    if recovered := recovery.details():
        details["recovery"] = recovered
        if any(r["epoch_kept"] < len(r["held_out_scores"]) - 1 for r in recovered["per_increment"]):
            notes.append(
                "recovery kept an earlier epoch's weights: they scored best on the "
                f"{recovered['held_out_samples']} samples held out of its training (details.recovery)"
            )
    details.update(
        params_before=params_before,
        params_after=params_after,
        nonzero_after=nonzero_after,
        macs_before=macs_before,
        macs_after=macs_after,
    )
    fmt = output_format(step, model.format)
    if step.kind != "structured":
        if fmt == ModelFormat.PT2 and step.storage == "sparse":
            packed = pack_sparse_layers(module, list(eligible))
            notes.append(
                f"{packed} pruned layers stored as bitmask + non-zero values, so the file shrinks with the sparsity; "
                "dense kernels do not run faster on zeros, so latency is not expected to improve"
            )
        elif fmt == ModelFormat.ONNX:
            notes.append("ONNX stores the zeros densely: the file does not shrink; choose output 'pt2' for that")
        else:
            notes.append("zeros stored densely (storage 'dense'): the file does not shrink")
    path = ctx.artifact_path(fmt, step.kind)
    save_model(module, spec, fmt, path)
    return StepOutput(path, fmt, notes, details)


def _increments(step: PruneStep, total: float) -> list[float]:
    return schedule(step.schedule)(total, step.increments)[1:]


VALIDATION_SPLIT = 0.2  # of the training data, held out of recovery to choose the epoch kept
MIN_VALIDATION = 10  # fewer held-out samples than this cannot rank epochs (as distillation)


@dataclass
class Recovery:
    """What recovery training matches: the model before pruning (None when there are labels) and, for a
    language model, its vocabulary, so its logits are matched token by token (training.per_token). With
    enough data, a part of the training data is held out of recovery and scored before and after each
    epoch (against the labels, or the model before pruning), and the best epoch's weights are kept."""

    reference: nn.Module | None
    vocabulary: int | None
    train: Dataset | None = None
    held_out: Dataset | None = None
    held_out_reference: torch.Tensor | None = None
    kept: list[dict] = field(default_factory=list)

    @classmethod
    def of(cls, module: nn.Module, step: PruneStep, ctx: StepContext, vocabulary: int | None) -> Recovery:
        if not step.trains():
            return cls(None, vocabulary)
        before = copy.deepcopy(module).eval() if ctx.data.y is None else None
        recovery = cls(before, vocabulary, train=ctx.data)
        # a language model's logits for every held-out token would cost more than the choice is worth
        if vocabulary is None and len(ctx.data) * VALIDATION_SPLIT >= MIN_VALIDATION:
            recovery.train, recovery.held_out = ctx.data.split(VALIDATION_SPLIT)
            if before is not None:
                recovery.held_out_reference = outputs(before, recovery.held_out, ctx.device)
        return recovery

    def details(self) -> dict | None:
        if self.held_out is None:
            return None
        return {"held_out_samples": len(self.held_out), "per_increment": self.kept}


def _recover(module, step: PruneStep, ctx: StepContext, recovery: Recovery, lo: float, hi: float, label: str) -> None:
    if not step.trains():
        return
    best = None
    if recovery.held_out is not None:
        best = BestEpoch(lambda m: quality(m, recovery.held_out, recovery.held_out_reference, ctx.device))
    finetune(
        module,
        recovery.train,
        epochs=step.finetune_epochs,
        learning_rate=step.learning_rate,
        batch_size=step.batch_size,
        device=ctx.device,
        reference=recovery.reference,
        progress=lambda f, s: ctx.progress(lo + (hi - lo) * f, f"{label}: fine-tuning {s}"),
        vocabulary=recovery.vocabulary,
        best=best,
    )
    if best is not None:
        recovery.kept.append(
            {"increment": label, "held_out_scores": [round(x, 4) for x in best.scores], "epoch_kept": best.epoch}
        )


def _taylor_gradients(module, step: PruneStep, ctx: StepContext) -> None:
    accumulate_gradients(module, ctx.data, batch_size=step.batch_size, max_batches=TAYLOR_BATCHES, device=ctx.device)


def _unstructured(module, step, ctx, eligible, protected, example, recovery: Recovery) -> list[str]:
    targets = _increments(step, step.amount)
    for k, target in enumerate(targets, start=1):
        label = f"increment {k}/{len(targets)} to {target:.1%}"
        ctx.progress((k - 1) / len(targets), label)
        masks.make_permanent(eligible)  # scores read plain weights; zeros already pruned score lowest
        if step.criterion == "taylor":
            _taylor_gradients(module, step, ctx)
        layer_masks = masks.unstructured_masks(masks.scores(eligible, step.criterion), target, step.scope)
        module.zero_grad(set_to_none=True)
        masks.apply_masks(eligible, layer_masks)
        _recover(module, step, ctx, recovery, (k - 1) / len(targets), k / len(targets), label)
    masks.make_permanent(eligible)
    achieved = masks.achieved_sparsity(eligible)
    return [
        f"{achieved:.1%} of the weights in {len(eligible)} layers are zero ({step.criterion}, {step.scope} scope"
        + (f", {step.increments} increments, {step.schedule} schedule" if step.increments > 1 else "")
        + ")"
    ]


def _two_four(module, step, ctx, eligible, protected, example, recovery: Recovery) -> list[str]:
    if step.criterion == "taylor":
        _taylor_gradients(module, step, ctx)
    layer_scores = masks.scores(eligible, step.criterion)
    module.zero_grad(set_to_none=True)
    masks.apply_masks(eligible, {n: masks.two_four_mask(s) for n, s in layer_scores.items()})
    _recover(module, step, ctx, recovery, 0.0, 1.0, "2:4")
    masks.make_permanent(eligible)
    notes = [f"2:4 sparsity in {len(eligible)} Linear layers: 2 of every 4 consecutive weights are zero"]
    if ctx.device == Device.CUDA:
        notes.append("the artifact stores the 2:4 masked weights; semi-structured sparse kernels are not applied to it")
    else:
        notes.append("CPUs have no 2:4 sparse kernels: no speedup is expected on this worker")
    return notes


def _drop_unprunable(module, step, ctx, eligible, protected, example, details, notes):
    """Layers whose channels this model cannot lose are kept whole and named; only if none is left does
    the step fail, naming each layer and why."""
    ctx.progress(0.0, "checking which layers can lose channels")
    ratio = step.amount if step.target_macs_reduction is None else 0.5
    scope = step.scope
    if scope == "sensitivity":  # its trials go up to twice the target: checked at the highest of them
        ratio, scope = allocation.levels(step.target_macs_reduction or step.amount)[-1], "layer"
    try:
        bad = unprunable_layers(module, example, list(eligible), set(protected), ratio=ratio, scope=scope)
    except ValueError as e:
        hint = ""
        if isinstance(module, ConvertedOnnx):  # onnx2torch keeps shapes the ONNX graph holds as constants
            hint = (
                " (an ONNX graph that holds channel counts as constants, in Split sizes or Reshape shapes, cannot "
                "lose channels; unstructured pruning or quantization can still be applied)"
            )
        raise StepFailedError(f"structured pruning cannot be applied to this model: {e}{hint}") from None
    if not bad:
        return eligible, protected
    details["unprunable"] = bad
    left = {n: m for n, m in eligible.items() if n not in bad}
    if not left:
        raise StepFailedError(
            "no layer of this model can lose channels: " + "; ".join(f"{n}: {why}" for n, why in bad.items())
        )
    notes.append(
        f"kept whole because removing their channels breaks the model: {role_summary(bad)} "
        "(details.unprunable has each reason)"
    )
    details["kept_whole"] = sorted(set(protected) | set(bad))
    return left, set(protected) | set(bad)


def _sensitivity_plan(module, step, ctx, protected, example, details, notes) -> dict[nn.Module, float] | None:
    """Per-group ratios from measured sensitivity (pruning/allocation.py), or None, with a note, where the
    model is pruned by the global ranking instead (attention heads, or too many groups to try each)."""
    if attention_heads(module):
        notes.append("scope 'sensitivity' is not applied to attention heads: pruned by the global ranking")
        return None
    ctx.progress(0.0, "measuring each channel group's sensitivity")
    try:
        found = allocation.plan(
            module,
            example,
            sorted(protected),
            ctx.data,
            sparsity=None if step.target_macs_reduction is not None else step.amount,
            macs_reduction=step.target_macs_reduction,
            progress=lambda f: ctx.progress(0.0, f"sensitivity of the channel groups ({f:.0%})"),
        )
    except ValueError as e:
        raise StepFailedError(str(e)) from None
    if found is None:
        notes.append(
            f"more than {allocation.MAX_GROUPS} channel groups: pruned by the global ranking, not per-group sensitivity"
        )
        return None
    details["allocation"] = found.details
    notes.append(found.note)
    return {module.get_submodule(root): ratio for root, ratio in found.ratios.items()}


def _structured(module, step, ctx, eligible, protected, example, recovery: Recovery, ratios=None) -> list[str]:
    notes = []
    shapes = weight_shapes(module)
    kept_modules = [module.get_submodule(n) for n in protected]
    ratio = step.amount
    scope = "global" if step.scope == "sensitivity" else step.scope
    if ratios is not None:
        ratio, scope = 0.0, "layer"  # every group's own ratio, chosen from its sensitivity
    elif step.target_macs_reduction is not None:
        ctx.progress(0.0, "finding the channel ratio for the MACs target")
        try:
            ratio = ratio_for_macs(
                module, example[:1], step.target_macs_reduction, scope=scope, protected_names=sorted(protected)
            )
        except ValueError as e:
            raise StepFailedError(str(e)) from None
        notes.append(f"{ratio:.1%} of the channels removed to cut MACs by {step.target_macs_reduction:.0%}")
    try:
        pruner = make_pruner(
            module,
            example,
            ratio=ratio,
            criterion=step.criterion,
            scope=scope,
            protected=kept_modules,
            steps=step.increments,
            schedule_kind=step.schedule,
            ratio_per_layer=ratios,
        )
    except Exception as e:  # Torch-Pruning could not trace the model
        raise StepFailedError(f"cannot build the dependency graph of this model: {type(e).__name__}: {e}") from None
    for k in range(1, step.increments + 1):
        label = f"increment {k}/{step.increments}"
        ctx.progress((k - 1) / step.increments, label)
        if step.criterion == "taylor":
            _taylor_gradients(module, step, ctx)
        pruner.step()
        module.zero_grad(set_to_none=True)
        _check_runs(module, example)
        _recover(module, step, ctx, recovery, (k - 1) / step.increments, k / step.increments, label)
    notes.append(
        f"channels physically removed ({step.criterion}, "
        + ("per-group ratios" if ratios is not None else f"{scope} scope, ratio {ratio:.0%}")
        + ", each width rounded "
        f"to a multiple of {channel_block()}, the CPU kernels' channel block, or of {SMALLEST_BLOCK} in layers "
        f"narrower than {2 * channel_block()}); "
        f"layers kept whole: {role_summary(protected) or 'none'}"
    )
    if coupled := unchanged_layers(shapes, module, set(protected)):
        notes.append(
            "also unchanged (coupled to layers kept whole, or too narrow to lose a block of channels): "
            f"{role_summary(coupled)}"
        )
    return notes


def _check_runs(module: nn.Module, example: torch.Tensor) -> None:
    try:
        with torch.no_grad():
            module.eval()(example.to(module_device(module)))
    except Exception as e:
        raise StepFailedError(
            f"the model no longer runs after removing channels ({type(e).__name__}: {e}); an operation in it "
            "hard-codes a channel count. Exclude the layers around it, or upload weights with an architecture name"
        ) from None
