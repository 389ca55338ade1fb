"""`export`: write the model in another format (ONNX, TorchScript, torch.export)."""

from __future__ import annotations

from ..formats import LoadedModel, ModelFormat, save_model
from ..steps.export import ExportStep
from .base import StepContext, StepResult


def export(model: LoadedModel, step: ExportStep, ctx: StepContext) -> StepResult:
    target = ModelFormat(step.format)
    path = save_model(model.module, model.require_spec(), target, ctx.artifact_path(target))
    return StepResult(path, target, [f"exported to {step.format}"])
