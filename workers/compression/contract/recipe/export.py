"""`export` step: its typed config and the formats it takes (torch-free; the verb is in methods/export.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..formats import EAGER_FORMATS, ModelFormat
from ..vocabulary import Runtime

EAGER = EAGER_FORMATS
FORMATS = {
    "pt2": EAGER,
    "onnx": EAGER,
    # TorchScript is deprecated upstream; written only because a recipe asks for it
    "torchscript": EAGER | {ModelFormat.TORCHSCRIPT},
    # OpenVINO IR (model.xml + model.bin, zipped), fp32, converted from the model's ONNX form
    "openvino": EAGER | {ModelFormat.ONNX},
}


class ExportStep(BaseModel):
    """Convert the model to another file format, unchanged otherwise."""

    model_config = ConfigDict(extra="forbid", title="export")
    method: Literal["export"] = "export"
    format: Literal["onnx", "torchscript", "pt2", "openvino"] = Field(
        description="the target format (openvino: IR, model.xml + model.bin in one zip, run by OpenVINO's CPU plugin)"
    )

    def summary(self) -> str:
        """A few words a job list shows for this step."""
        return f"export {self.format}"


def formats(step: ExportStep) -> frozenset[ModelFormat]:
    return FORMATS[step.format]


def output_format(step: ExportStep, fmt: ModelFormat) -> ModelFormat:
    return ModelFormat(step.format)


def check_order(step: ExportStep, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    torch_int8 = any(
        getattr(s, "scheme", None) in ("int8_dynamic", "int8_static", "int8_qat")
        and fmt != ModelFormat.ONNX
        and getattr(s, "runtime", None) != Runtime.ONNXRUNTIME
        for s, fmt in earlier
    )
    if step.format == "onnx" and torch_int8:
        # PT2E int8 programs call quantized_decomposed ops, which the ONNX exporter cannot translate
        return (
            "a PyTorch int8 program cannot be exported to ONNX; quantize with runtime onnxruntime instead "
            '([{"method": "quantize", "scheme": "int8_static", "runtime": "onnxruntime"}]), or export first, '
            'then quantize: [{"method": "export", "format": "onnx"}, {"method": "quantize", ...}]'
        )
    return None
