"""`quantize` step: its typed config and the formats each scheme takes (torch-free; the verb is in
methods/quantize.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..formats.kinds import ModelFormat

TORCH_FORMATS = frozenset({ModelFormat.PT2, ModelFormat.SAFETENSORS, ModelFormat.HUGGINGFACE})
FORMATS = {
    "fp16": TORCH_FORMATS | {ModelFormat.TORCHSCRIPT},
    "bf16": TORCH_FORMATS | {ModelFormat.TORCHSCRIPT},
    "int8_dynamic": TORCH_FORMATS | {ModelFormat.ONNX},
}


class QuantizeStep(BaseModel):
    """Quantize weights (and, for int8_dynamic, activations at run time)."""

    model_config = ConfigDict(extra="forbid", title="quantize")
    method: Literal["quantize"] = "quantize"
    scheme: Literal["fp16", "bf16", "int8_dynamic"] = Field(
        description="fp16/bf16: half-precision weights and compute; int8_dynamic: int8 weights, "
        "activations quantized per batch at run time (Linear and Conv layers; MatMul/Gemm in ONNX models)"
    )
    reduce_range: bool | None = Field(
        None,
        description="int8_dynamic: use 7-bit activations so u8xs8 products cannot saturate on CPUs without "
        "VNNI; default: on exactly when the worker's CPU lacks VNNI",
    )


def formats(step: QuantizeStep) -> frozenset[ModelFormat]:
    return FORMATS[step.scheme]


def output_format(step: QuantizeStep, fmt: ModelFormat) -> ModelFormat:
    # eager sources (weights + architecture, Hugging Face) come out as torch.export programs
    return fmt if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.ONNX) else ModelFormat.PT2
