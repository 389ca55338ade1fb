"""`auto` step: searches compression pipelines under an accuracy budget (torch-free config; the verb is
in methods/auto.py, the search in search/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..formats import EAGER_FORMATS, ModelFormat
from ..inspection import ModelInfo
from ..vocabulary import Runtime

TORCH_FORMATS = EAGER_FORMATS
# ONNX models can only be quantized by onnxruntime, so the search there is over int8 schemes alone
FORMATS = {"auto": TORCH_FORMATS | {ModelFormat.ONNX}}
AutoRuntime = Literal[Runtime.EAGER, Runtime.INDUCTOR, Runtime.ONNXRUNTIME, Runtime.OPENVINO]
Technique = Literal["quantize", "prune", "distill"]


class AutoStep(BaseModel):
    """Search quantization schemes and runtimes, structured pruning with recovery, distillation into a
    student derived from the model, and their combinations, under an accuracy budget and a time budget.
    Every candidate is measured and kept in the results; the result is the Pareto front (accuracy,
    latency, size) and the artifact recommended for the objective."""

    model_config = ConfigDict(extra="forbid", title="auto")
    method: Literal["auto"] = "auto"
    max_accuracy_drop: float = Field(
        0.01,
        gt=0,
        lt=1,
        description="largest accuracy loss allowed (absolute: 0.01 = 1 point; agreement with the original "
        "model when the data has no labels; for a causal language model, the relative perplexity increase: 0.05 = +5 %)",
    )
    objective: Literal["latency", "size", "balanced"] = Field(
        "latency",
        description="what the recommended artifact is best at: latency (geometric mean of the batch-1 and "
        "large-batch speedups; for a causal language model, decode tokens/s), size (size ratio), balanced "
        "(geometric mean of both)",
    )
    budget_minutes: float = Field(
        30.0,
        gt=0,
        le=24 * 60,
        description="wall-clock budget for the search and the final measurement; when it runs out, the best "
        "candidate found so far is returned",
    )
    runtimes: list[AutoRuntime] = Field(
        [Runtime.EAGER, Runtime.INDUCTOR, Runtime.ONNXRUNTIME, Runtime.OPENVINO],
        min_length=1,
        description="what may run the result: eager PyTorch (.pt2), PyTorch compiled by inductor (int8 .pt2), "
        "onnxruntime (.onnx), OpenVINO (IR, model.xml + model.bin zipped; int8 through NNCF)",
    )
    techniques: list[Technique] = Field(
        ["quantize", "prune", "distill"], min_length=1, description="which techniques the search may combine"
    )
    seed: int = 0

    def summary(self) -> str:
        """A few words a job list shows for this step."""
        return (
            f"auto: {self.objective}, accuracy within {self.max_accuracy_drop * 100:g} pt, {self.budget_minutes:g} min"
        )

    def needs_data(self) -> str | None:
        return "auto calibrates, trains and scores candidates on data: add a dataset (labels optional)"

    def trains(self) -> bool:
        return True


def formats(step: AutoStep) -> frozenset[ModelFormat]:
    return FORMATS["auto"]


def output_format(step: AutoStep, fmt: ModelFormat) -> ModelFormat:
    # the recommended artifact's format is known only after the search; it is .pt2 or .onnx
    return ModelFormat.ONNX if step.runtimes == [Runtime.ONNXRUNTIME] or fmt == ModelFormat.ONNX else ModelFormat.PT2


def check_order(step: AutoStep, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    if earlier:
        return (
            "auto searches whole pipelines itself (pruning, distillation, quantization and their order): "
            'give it as the only step, e.g. {"steps": [{"method": "auto", "max_accuracy_drop": 0.01}]}'
        )
    return None


def check_model(step: AutoStep, info: ModelInfo) -> str | None:
    if info.format == ModelFormat.ONNX and not {Runtime.ONNXRUNTIME, Runtime.OPENVINO} & set(step.runtimes):
        return "an ONNX model runs on onnxruntime or OpenVINO: include 'onnxruntime' or 'openvino' in runtimes"
    if info.format == ModelFormat.ONNX and "quantize" not in step.techniques:
        return "an ONNX model can only be quantized: include 'quantize' in techniques"
    return None
