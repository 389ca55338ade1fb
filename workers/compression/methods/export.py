"""`export`: write the model in another format (ONNX, TorchScript, torch.export)."""

from __future__ import annotations

from ..contract.recipe.export import ExportStep
from ..formats import LoadedModel, ModelFormat, save_model
from ..step import StepContext, StepOutput


def export(model: LoadedModel, step: ExportStep, ctx: StepContext) -> StepOutput:
    target = ModelFormat(step.format)
    path = save_model(model.module, model.require_spec(), target, ctx.artifact_path(target))
    return StepOutput(path, target, [f"exported to {step.format}"])
