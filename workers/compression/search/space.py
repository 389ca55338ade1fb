"""The search space of `auto`: which recipes are worth trying for a model, an objective and the runtimes
allowed, in the order the search tries them. Each candidate is an ordinary recipe (typed step configs), so
what the search found can be rerun as a job by hand."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from ..contract.recipe.auto import AutoStep
from ..contract.recipe.distill import Derive, DistillStep, Student
from ..contract.recipe.export import ExportStep
from ..contract.recipe.prune import PruneStep
from ..contract.recipe.quantize import QuantizeConfig, quantize_step
from ..contract.vocabulary import Device, Runtime

SCREEN_CALIBRATION_BATCHES = 4  # a short calibration ranks int8 runtimes; the winner is redone with the full one
FULL_CALIBRATION_BATCHES = 32
PRUNE_RATIOS = (0.25, 0.5, 0.75)  # fractions of channels removed
DERIVED_WIDTH = 0.5
FIRST_EPOCHS = 1  # successive halving: every arm trains this long, the better half twice as long, ...
MAX_EPOCHS = 16

# which techniques are likely to pay off first, per objective: the budget may stop the search early, so
# the likely winners go first (on a CPU, int8 with a runtime that executes it is the surest speedup;
# low-bit weights the surest size cut)
PRIORITY = {
    "latency": [
        "int8_static",
        "onnx",
        "int8_dynamic",
        "int8_weight_only",
        "int4_weight_only",
        "fp16",
        "bf16",
        "ternary",
        "binary",
    ],
    "size": [
        "int4_weight_only",
        "ternary",
        "binary",
        "int8_weight_only",
        "int8_static",
        "int8_dynamic",
        "fp16",
        "bf16",
        "onnx",
    ],
    "balanced": [
        "int8_static",
        "int4_weight_only",
        "int8_weight_only",
        "onnx",
        "int8_dynamic",
        "ternary",
        "binary",
        "fp16",
        "bf16",
    ],
}


@dataclass(frozen=True)
class Candidate:
    label: str
    steps: tuple[BaseModel, ...]
    rung: str  # screen (no training), guarded, train (successive halving), combo
    epochs: int = 0  # training epochs, for the cost estimate

    def recipe(self) -> list[dict]:
        return [{"method": s.method} | s.model_dump(exclude_defaults=True) for s in self.steps]


def int8_runtime(auto: AutoStep, onnx_model: bool) -> str | None:
    """What runs int8_static: every allowed runtime (auto: one build, one artifact per runtime, each measured),
    or the one allowed; None when the search may use none of them."""
    possible = (Runtime.ONNXRUNTIME, Runtime.OPENVINO) if onnx_model else (Runtime.INDUCTOR, Runtime.ONNXRUNTIME, Runtime.OPENVINO)
    allowed = [r for r in possible if r in auto.runtimes]
    return None if not allowed else (allowed[0] if len(allowed) == 1 else "auto")


def screen_quantization(auto: AutoStep, onnx_model: bool, device: str = "cpu") -> list[Candidate]:
    """Every scheme and runtime that applies, untrained, short calibration: cheap to build and measure."""
    if "quantize" not in auto.techniques:
        return []
    out = []
    for name in PRIORITY[auto.objective]:
        if auto.objective == "latency" and device == Device.CPU and name in ("fp16", "bf16"):
            # no half-precision kernels on this CPU path: measured 10-20x slower than fp32, and timing a large
            # model at batch 32 in half precision alone takes minutes of the budget
            continue
        if name == "int8_static":
            if runtime := int8_runtime(auto, onnx_model):
                step = quantize_step("int8_static", runtime=runtime, calibration_batches=SCREEN_CALIBRATION_BATCHES)
                label = f"int8_static ({SCREEN_CALIBRATION_BATCHES}-batch calibration)"
                out.append(Candidate(label, (step,), "screen"))
        elif name == "int8_dynamic" and (Runtime.ONNXRUNTIME if onnx_model else Runtime.EAGER) in auto.runtimes:
            out.append(Candidate("int8_dynamic", (quantize_step("int8_dynamic"),), "screen"))
        elif onnx_model:
            continue  # onnxruntime's int8 schemes are the only ones that apply to an ONNX model
        elif name == "onnx":  # the original, fp32, on another runtime: a runtime switch alone may pay
            if Runtime.ONNXRUNTIME in auto.runtimes:
                out.append(Candidate("fp32 on onnxruntime", (ExportStep(format="onnx"),), "screen"))
            if Runtime.OPENVINO in auto.runtimes:
                out.append(Candidate("fp32 on OpenVINO", (ExportStep(format="openvino"),), "screen"))
        elif name not in ("onnx", "int8_static", "int8_dynamic") and Runtime.EAGER in auto.runtimes:
            out.append(Candidate(name, (quantize_step(name),), "screen"))
    return out


def guarded_quantization(
    auto: AutoStep, screened: QuantizeConfig, budget: float, onnx_model: bool = False
) -> list[Candidate]:
    """The screen's best int8 scheme, over the budget: full calibration with the accuracy guard (the most
    sensitive layers stay in float until the drop fits), then quantization-aware training (not for an ONNX
    upload: QAT trains a PyTorch graph)."""
    out = []
    if screened.scheme == "int8_static":
        step = quantize_step(
            "int8_static",
            runtime=screened.runtime,
            calibration_batches=FULL_CALIBRATION_BATCHES,
            max_accuracy_drop=budget,
        )
        out.append(Candidate("int8_static, full calibration, sensitive layers kept in float", (step,), "guarded"))
        if Runtime.INDUCTOR in auto.runtimes and not onnx_model:
            qat = quantize_step("int8_qat", finetune_epochs=2)
            out.append(Candidate("int8_qat (2 epochs)", (qat,), "guarded", epochs=2))
    elif screened.max_accuracy_drop is None and screened.scheme not in ("fp16", "bf16"):
        step = screened.model_copy(update={"max_accuracy_drop": budget})
        out.append(Candidate(f"{screened.scheme}, sensitive layers kept in float", (step,), "guarded"))
    return out


def screen_pruning(auto: AutoStep, onnx_model: bool) -> list[Candidate]:
    """Structured pruning at several ratios before any recovery: the speed and size each ratio buys (MACs
    and latency) and how much accuracy it costs untrained, which ranks the arms for training."""
    if "prune" not in auto.techniques or onnx_model:
        return []
    return [Candidate(f"structured pruning {r:.0%}, no recovery", (_prune(r, 0),), "screen") for r in PRUNE_RATIOS]


def training_arm(kind: str, value: float, epochs: int, seed: int) -> Candidate:
    if kind == "prune":
        return Candidate(
            f"structured pruning {value:.0%} + {epochs} recovery epoch(s)", (_prune(value, epochs),), "train", epochs
        )
    step = DistillStep(student=Student(derive=Derive(width=value)), epochs=epochs, seed=seed)
    return Candidate(f"distilled into the model at {value:.0%} width, {epochs} epoch(s)", (step,), "train", epochs)


def _prune(ratio: float, epochs: int) -> PruneStep:
    return PruneStep(kind="structured", sparsity=ratio, finetune_epochs=epochs)


def runnable(auto: AutoStep, cand: Candidate) -> Candidate | None:
    """A pruned or distilled model is an eager .pt2; when eager PyTorch is not an allowed runtime, it is
    measured on onnxruntime instead (None when neither is allowed)."""
    if cand.steps[-1].method not in ("prune", "distill") or Runtime.EAGER in auto.runtimes:
        return cand
    if Runtime.ONNXRUNTIME in auto.runtimes:
        return Candidate(
            f"{cand.label} -> onnxruntime fp32", (*cand.steps, ExportStep(format="onnx")), cand.rung, cand.epochs
        )
    return None


def with_finisher(base: Candidate, finisher: QuantizeConfig | ExportStep) -> Candidate:
    """A trained model followed by one of the best single steps found: a quantization (int8 with the full
    calibration) or the export that puts it on onnxruntime."""
    if isinstance(base.steps[-1], ExportStep):  # the trained model was measured on onnxruntime: start before
        base = Candidate(base.label.removesuffix(" -> onnxruntime fp32"), base.steps[:-1], base.rung, base.epochs)
    if isinstance(finisher, ExportStep):
        return Candidate(f"{base.label} -> onnxruntime fp32", (*base.steps, finisher), "combo", base.epochs)
    if finisher.scheme == "int8_static":
        finisher = finisher.model_copy(update={"calibration_batches": FULL_CALIBRATION_BATCHES})
    label = f"{base.label} -> {finisher.scheme}" + (
        f" ({finisher.runtime})" if getattr(finisher, "runtime", "auto") != "auto" else ""
    )
    return Candidate(label, (*base.steps, finisher), "combo", base.epochs)
