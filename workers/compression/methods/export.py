"""`export`: write the model in another format (ONNX, TorchScript, torch.export)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..formats import LoadedModel, ModelFormat, save_model
from .base import StepContext, StepResult

EAGER = frozenset({ModelFormat.PT2, ModelFormat.SAFETENSORS, ModelFormat.HUGGINGFACE})
FORMATS = {
    "pt2": EAGER,
    "onnx": EAGER,
    # TorchScript is deprecated upstream; written only because a recipe asks for it
    "torchscript": EAGER | {ModelFormat.TORCHSCRIPT},
}


class ExportStep(BaseModel):
    """Convert the model to another file format, unchanged otherwise."""

    model_config = ConfigDict(extra="forbid", title="export")
    method: Literal["export"] = "export"
    format: Literal["onnx", "torchscript", "pt2"] = Field(description="the target format")


def formats(step: ExportStep) -> frozenset[ModelFormat]:
    return FORMATS[step.format]


def output_format(step: ExportStep, fmt: ModelFormat) -> ModelFormat:
    return ModelFormat(step.format)


def export(model: LoadedModel, step: ExportStep, ctx: StepContext) -> StepResult:
    target = ModelFormat(step.format)
    path = save_model(model.module, model.require_spec(), target, ctx.artifact_path(target))
    return StepResult(path, target, [f"exported to {step.format}"])
