"""`distill`: train a smaller student to reproduce the model (the teacher) on the job's dataset."""

from __future__ import annotations

from ..contract.errors import RecipeError
from ..contract.recipe.distill import DistillStep, output_format
from ..distillation.students import build_student, check_outputs
from ..distillation.trainer import Phase, train, validate
from ..formats import LoadedModel, save_model
from ..measure.metrics import count_params
from ..step import StepContext, StepOutput

MIN_VALIDATION = 10  # fewer held-out samples than this cannot rank epochs


def distill(model: LoadedModel, step: DistillStep, ctx: StepContext) -> StepOutput:
    # the same checks the submission ran (contract/recipe/distill.py), for callers of the engine directly
    if ctx.data is None:
        raise RecipeError(step.needs_data())
    if ctx.data.y is None and (reason := step.needs_labels()):
        raise RecipeError(reason)
    if step.features and not hasattr(model.module, "get_submodule"):
        raise RecipeError("feature matching needs a PyTorch teacher")
    spec = model.require_spec()
    teacher = model.module
    example = ctx.data.x[:2]
    student, notes = build_student(step, model, ctx.models, example)
    student.to(ctx.device)
    check_outputs(student, model, example)

    train_data, val_data = ctx.data, None
    if step.validation_split > 0 and len(ctx.data) * step.validation_split >= MIN_VALIDATION:
        train_data, val_data = ctx.data.split(step.validation_split, seed=step.seed)
    share = 0.5 if step.compare_baseline else 1.0
    phase = _phase(ctx, "kd", 0.0, share)
    outcome = train(student, teacher, train_data, val_data, step, phase, ctx.device, spec.vocabulary)
    teacher_params, _ = count_params(teacher)
    student_params, _ = count_params(student)
    details = {
        "student_params": student_params,
        "teacher_params": teacher_params,
        "train_samples": len(train_data),
        "validation_samples": len(val_data) if val_data is not None else 0,
        "history": outcome.history,
        "best_epoch": outcome.best_epoch,
        "stopped_early": outcome.stopped_early,
    }
    if outcome.resumed_from:
        details["resumed_from_epoch"] = outcome.resumed_from
        notes.append(f"resumed from the checkpoint of epoch {outcome.resumed_from}")
    notes.append(
        f"{'soft' if step.loss == 'soft' else 'hard'}-label distillation"
        + (f", T={step.temperature}, alpha={step.alpha}" if step.loss == "soft" else "")
        + ("" if ctx.data.y is not None else " (no labels: the teacher's outputs are the only target)")
        + f"; best epoch {outcome.best_epoch} of {len(outcome.history)}"
    )
    if step.compare_baseline:
        details["compare_baseline"] = _baseline(step, model, ctx, student, train_data, val_data, example)
    fmt = output_format(step, model.format)
    path = ctx.artifact_path(fmt, "student")
    save_model(student.eval(), spec, fmt, path)
    return StepOutput(path, fmt, notes, details)


def _baseline(step, model, ctx, student, train_data, val_data, example) -> dict:
    """The same student (same initialisation, data, epochs, seed) trained on the labels alone."""
    plain, _ = build_student(step, model, ctx.models, example)
    plain.to(ctx.device)
    outcome = train(plain, None, train_data, val_data, step, _phase(ctx, "labels", 0.5, 0.5), ctx.device)
    scored = ctx.eval_data if ctx.eval_data is not None else val_data
    result = {"labels_only_best_epoch": outcome.best_epoch, "history": outcome.history}
    if scored is not None:
        distilled, labels_only = validate(student, scored, None, ctx.device), validate(plain, scored, None, ctx.device)
        result.update(
            scored_on="eval data" if ctx.eval_data is not None else "validation split",
            distilled_accuracy=round(distilled, 5),
            labels_only_accuracy=round(labels_only, 5),
            gain=round(distilled - labels_only, 5),
        )
    return result


def _phase(ctx: StepContext, name: str, lo: float, share: float) -> Phase:
    label = "distilling" if name == "kd" else "training on labels only (baseline)"
    return Phase(
        name=name,
        checkpoint=ctx.checkpoint_dir / f"step{ctx.index}_distill_{name}.ckpt" if ctx.checkpoint_dir else None,
        on_checkpoint=ctx.on_checkpoint,
        progress=lambda f, s: ctx.progress(lo + share * f, f"{label}: {s}"),
    )
