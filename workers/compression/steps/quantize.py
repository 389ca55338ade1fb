"""`quantize` step: its typed config and the formats each scheme takes (torch-free; the verb is in
methods/quantize.py)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..formats.kinds import ModelFormat
from .layers import unmatched_exclude

TORCH_FORMATS = frozenset({ModelFormat.PT2, ModelFormat.SAFETENSORS, ModelFormat.HUGGINGFACE})
FORMATS = {
    "int8_dynamic": TORCH_FORMATS | {ModelFormat.ONNX},
    "int8_static": TORCH_FORMATS | {ModelFormat.ONNX},
    "int8_qat": TORCH_FORMATS,
    "int8_weight_only": TORCH_FORMATS,
    "int4_weight_only": TORCH_FORMATS,
    "fp16": TORCH_FORMATS | {ModelFormat.TORCHSCRIPT},
    "bf16": TORCH_FORMATS | {ModelFormat.TORCHSCRIPT},
    "binary": TORCH_FORMATS,
    "ternary": TORCH_FORMATS,
}
# schemes whose int8 graph a runtime can execute fast; the others run in eager PyTorch
RUNTIMES = {"int8_static": ("inductor", "onnxruntime"), "int8_qat": ("inductor",)}
RECOMMEND_BUDGET = 0.01  # accuracy drop allowed when choosing among runtimes without max_accuracy_drop

Scheme = Literal[
    "int8_dynamic",
    "int8_static",
    "int8_qat",
    "int8_weight_only",
    "int4_weight_only",
    "fp16",
    "bf16",
    "binary",
    "ternary",
]


class QuantizeStep(BaseModel):
    """Lower-precision weights (and activations for the int8 schemes)."""

    model_config = ConfigDict(extra="forbid", title="quantize")
    method: Literal["quantize"] = "quantize"
    scheme: Scheme = Field(
        description="int8_static: int8 weights and calibrated activations (needs a dataset); int8_dynamic: "
        "int8 weights, activations quantized per batch; int8_qat: int8 with quantization-aware fine-tuning "
        "(labels, or distillation from the fp32 model); int8_weight_only / int4_weight_only: low-bit weights, "
        "fp32 compute; fp16 / bf16: half precision; binary / ternary: 1-bit / 2-bit weights with a scale per "
        "output channel"
    )
    runtime: Literal["auto", "inductor", "onnxruntime"] = Field(
        "auto",
        description="int8_static / int8_qat: what runs the int8 model. auto: every runtime that applies "
        "(inductor and onnxruntime for int8_static on PyTorch models), all measured, the fastest within "
        "the accuracy budget recommended. ONNX models always use onnxruntime.",
    )
    calibration_batches: int = Field(32, ge=1, le=10_000, description="int8_static: batches of 32 to calibrate on")
    reduce_range: bool | None = Field(
        None,
        description="7-bit activations so u8xs8 products cannot saturate on CPUs without VNNI; default: on such "
        "CPUs both are tried and reduce_range is used only when it measures more accurate",
    )
    max_accuracy_drop: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="largest accuracy loss allowed (absolute, 0.01 = 1 point; agreement with the fp32 model "
        "when the data has no labels). Over it, the most sensitive layers stay in full precision until it "
        "holds; if none fits, the step fails and stores the best candidate. Needs a dataset.",
    )
    group_size: int | None = Field(
        None,
        ge=8,
        le=4096,
        description="int8_weight_only / int4_weight_only: inputs sharing one scale (default: int4 32, "
        "int8 one scale per output channel)",
    )
    keep_first_last: bool = Field(True, description="binary / ternary: keep the first and last layer in full precision")
    exclude: list[str] = Field([], description="layers kept in full precision (names or globs, e.g. 'head.*')")
    finetune_epochs: int | None = Field(
        None,
        ge=0,
        le=200,
        description="int8_qat: training epochs (default 3); binary / ternary: straight-through-estimator "
        "fine-tuning epochs (default 0). Uses labels, or distils from the fp32 model without them.",
    )
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="fine-tuning learning rate (AdamW, cosine decay)")
    batch_size: int = Field(64, ge=1, le=4096, description="fine-tuning batch size")

    @model_validator(mode="after")
    def _options_fit_scheme(self) -> QuantizeStep:
        if self.group_size is not None and self.scheme not in ("int8_weight_only", "int4_weight_only"):
            raise ValueError("group_size applies to int8_weight_only and int4_weight_only only")
        if self.runtime != "auto" and self.runtime not in RUNTIMES.get(self.scheme, ()):
            choices = RUNTIMES.get(self.scheme)
            raise ValueError(
                f"runtime {self.runtime!r} does not apply to {self.scheme}"
                + (f"; choose one of {', '.join(choices)} or auto" if choices else "; leave it auto")
            )
        if self.finetune_epochs and self.scheme not in ("int8_qat", "binary", "ternary"):
            raise ValueError("finetune_epochs applies to int8_qat, binary and ternary only")
        return self

    @property
    def epochs(self) -> int:
        if self.finetune_epochs is not None:
            return self.finetune_epochs
        return 3 if self.scheme == "int8_qat" else 0

    def needs_data(self) -> str | None:
        if self.scheme == "int8_static":
            return "int8_static calibrates activation ranges on data: add a dataset (labels are not needed)"
        if self.scheme == "int8_qat":
            return "int8_qat trains on data: add a dataset (labels, or none to distil from the fp32 model)"
        if self.epochs:
            return f"fine-tuning {self.scheme} weights needs a dataset"
        if self.max_accuracy_drop is not None:
            return "max_accuracy_drop is checked on data: add a dataset"
        return None

    def trains(self) -> bool:
        return self.epochs > 0


def formats(step: QuantizeStep) -> frozenset[ModelFormat]:
    return FORMATS[step.scheme]


def output_format(step: QuantizeStep, fmt: ModelFormat) -> ModelFormat:
    if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.ONNX):
        return fmt
    if step.runtime == "onnxruntime":
        return ModelFormat.ONNX
    # eager sources (weights + architecture, Hugging Face) come out as torch.export programs
    return ModelFormat.PT2


def check_model(step: QuantizeStep, info: dict) -> str | None:
    """`exclude` must name layers the model has (inspection's layer list; ONNX uploads have none)."""
    names = [layer["name"] for layer in info.get("layers") or []]
    if not names:
        return None
    unmatched = unmatched_exclude(step.exclude, names)
    if unmatched:
        return unmatched
    if all(any(fnmatchcase(n, p) for p in step.exclude) for n in names):
        return "every layer is excluded: nothing is left to quantize"
    return None


def check_order(step: QuantizeStep, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    for s, _ in earlier:
        if getattr(s, "method", None) == "quantize":
            return (
                f"the model is already quantized ({s.scheme}) by an earlier step; a model is quantized once: "
                "keep one quantize step"
            )
    return None
