"""`distill` step: its typed config and the formats it takes (torch-free; the verb is in methods/distill.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..formats import EAGER_FORMATS, EDITABLE_FORMATS, TRANSFORMERS_FORMATS, ModelFormat
from ..inspection import ModelInfo

ANY = frozenset(ModelFormat)
EAGER = EAGER_FORMATS
# the teacher only runs forward, so any format does; a student derived from it needs its layers
FORMATS = {
    "arch": ANY,
    "model_id": ANY,
    "derive.width": EDITABLE_FORMATS,
    "derive.layers": TRANSFORMERS_FORMATS,
}


class Derive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: float | None = Field(
        None, gt=0, lt=1, description="keep this fraction of the teacher's channels (structured pruning), then distil"
    )
    layers: int | None = Field(
        None, ge=1, le=256, description="Hugging Face encoders: keep this many of the teacher's layers, evenly spaced"
    )

    @model_validator(mode="after")
    def _one(self) -> Derive:
        if (self.width is None) == (self.layers is None):
            raise ValueError('derive takes one of {"width": 0.5} or {"layers": 6}')
        return self


class Student(BaseModel):
    """Where the student comes from: exactly one of `arch`, `model_id`, `derive`."""

    model_config = ConfigDict(extra="forbid")
    arch: str | None = Field(None, description="torchvision name, or timm:NAME, built with `kwargs`")
    kwargs: dict = Field({}, description="constructor arguments for `arch`, e.g. {'num_classes': 10}")
    model_id: str | None = Field(None, description="an uploaded model (its weights are the starting point)")
    derive: Derive | None = Field(None, description="shrink the teacher itself: {'width': 0.5} or {'layers': 6}")

    @model_validator(mode="after")
    def _one(self) -> Student:
        given = [k for k in ("arch", "model_id", "derive") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a student is one of arch, model_id or derive; got {given or 'none'}")
        if self.kwargs and self.arch is None:
            raise ValueError("kwargs go with arch")
        return self

    @property
    def source(self) -> str:
        if self.derive is not None:
            return "derive.width" if self.derive.width is not None else "derive.layers"
        return "arch" if self.arch is not None else "model_id"


class FeaturePair(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="a layer name in the teacher (as in the model's info.layers)")
    student: str = Field(description="the student's layer whose output learns to match it")


class DistillStep(BaseModel):
    """Train a smaller student to reproduce the model (the teacher) on the job's dataset: soft labels
    with temperature (Hinton et al.), or the teacher's hard labels, mixed with the true labels when the
    dataset has them; optional feature matching (FitNets). Without labels it is pure distillation."""

    model_config = ConfigDict(extra="forbid", title="distill")
    method: Literal["distill"] = "distill"
    student: Student
    loss: Literal["soft", "hard"] = Field(
        "soft", description="soft: KL between temperature-softened outputs, times T^2; hard: the teacher's argmax"
    )
    temperature: float = Field(4.0, gt=0, le=100)
    alpha: float = Field(
        0.9, ge=0, le=1, description="weight of the distillation term; 1 - alpha goes to the true labels if present"
    )
    output_loss: Literal["mse", "cosine"] = Field(
        "mse", description="for teachers whose outputs are not class scores (embeddings, regression)"
    )
    features: list[FeaturePair] = Field([], max_length=16, description="intermediate outputs to match (MSE)")
    feature_weight: float = Field(1.0, ge=0, le=1000)
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    learning_rate: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.01, ge=0, le=1)
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up before the cosine decay")
    validation_split: float = Field(0.1, ge=0, lt=1, description="held out of the dataset to pick the best epoch")
    patience: int | None = Field(None, ge=1, description="stop after this many epochs without a better validation")
    augment: bool = Field(False, description="images: random shifts; the teacher then runs on every batch")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision on CUDA (auto: bf16)")
    seed: int = 0
    compare_baseline: bool = Field(
        False, description="also train the same student on the labels alone and report both (needs labels)"
    )
    output: Literal["pt2", "onnx"] | None = Field(
        None,
        description="artifact format: by default onnx for a student derived from an ONNX teacher (its layers "
        "are onnx2torch's, which torch.export does not always take), else pt2",
    )

    def trains(self) -> bool:
        return True

    def summary(self) -> str:
        """A few words a job list shows for this step."""
        s = self.student
        if s.derive is not None:
            into = f"width {s.derive.width:g}" if s.derive.width is not None else f"{s.derive.layers} layers"
        else:
            into = s.arch or s.model_id or "student"
        return f"distill into {into}, {self.epochs} epochs"

    def needs_data(self) -> str | None:
        return "distillation needs a dataset (labels optional)"

    def needs_labels(self) -> str | None:
        return (
            "compare_baseline trains a student on the labels alone, so it needs labels"
            if self.compare_baseline
            else None
        )


def formats(step: DistillStep) -> frozenset[ModelFormat]:
    return FORMATS[step.student.source]


def output_format(step: DistillStep, fmt: ModelFormat) -> ModelFormat:
    if step.output is not None:
        return ModelFormat(step.output)
    derived = step.student.derive is not None
    return ModelFormat.ONNX if derived and fmt == ModelFormat.ONNX else ModelFormat.PT2


def references(step: DistillStep) -> list[str]:
    """Other uploaded models the step reads."""
    return [step.student.model_id] if step.student.model_id else []


def check_reference(step: DistillStep, teacher: ModelInfo, student: ModelInfo) -> str | None:
    """Refuses an uploaded student whose outputs cannot be compared with the teacher's."""
    t, s = teacher.output_shape, student.output_shape
    if t and s and list(t[1:]) != list(s[1:]):
        return f"the student's output shape {s} does not match the teacher's {t}"
    ti, si = teacher.input, student.input
    if ti and si and (ti.dtype != si.dtype or len(ti.shape) != len(si.shape)):
        return f"the student takes {si.dtype} input {si.shape}, the teacher {ti.dtype} {ti.shape}"
    return None


def check_order(step: DistillStep, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    quantized = [s for s, _ in earlier if getattr(s, "method", None) == "quantize"]
    if step.student.derive is not None and quantized:
        # a derived student is the teacher with channels or layers removed: it needs float, trainable layers
        return (
            f"a student derived from the model needs float layers, but an earlier step quantized it "
            f"({quantized[0].scheme}); distil first, then quantize"
        )
    return None
