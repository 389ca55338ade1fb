"""`prune` step: its typed config and the formats each kind takes (torch-free; the verb is in
methods/prune.py)."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from ..formats import EDITABLE_FORMATS, ModelFormat
from ..inspection import ModelInfo
from .layers import unmatched_exclude

# pruning needs layers it can change: eager modules, or .pt2 graphs whose layers it lifts into modules
FORMATS = {kind: EDITABLE_FORMATS for kind in ("unstructured", "structured", "semi_structured_2_4")}


class PruneStep(BaseModel):
    """Remove weights: unstructured (single weights, stored sparse), structured (whole channels,
    physically removed: smaller and faster) or semi_structured_2_4 (2 of every 4 weights in Linear
    layers). Optional gradual schedule and recovery fine-tuning on the job's dataset."""

    model_config = ConfigDict(extra="forbid", title="prune", populate_by_name=True)
    method: Literal["prune"] = "prune"
    kind: Literal["unstructured", "structured", "semi_structured_2_4"] = Field(
        description="unstructured: zero single weights; structured: remove whole channels/filters with every "
        "coupled layer (Torch-Pruning); semi_structured_2_4: 2 of every 4 consecutive weights in Linear layers"
    )
    sparsity: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="fraction of weights (unstructured) or of channels (structured) to remove; default 0.5; "
        "2:4 is always 0.5",
    )
    target_macs_reduction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="structured only, instead of sparsity: remove channels until the MACs fall by this fraction",
    )
    criterion: Literal["magnitude", "taylor"] = Field(
        "magnitude",
        description="magnitude: |w|; taylor: |w * dL/dw| over the dataset, the first-order estimate of how "
        "much the loss changes when the weight is removed (needs a dataset)",
    )
    scope: Literal["global", "layer", "sensitivity"] = Field(
        "global",
        description="global: one threshold across all layers, so robust layers give more; layer: every "
        "layer loses the same fraction; sensitivity (structured, needs a dataset): each channel group is "
        "pruned alone at a few ratios on the job's data and the ratios that meet the target with the least "
        "output error are chosen (details.allocation)",
    )
    exclude: list[str] = Field(
        [],
        description="layer names (glob patterns such as 'layer1.*' or 'fc') that are never pruned; "
        "the output layer is always kept whole",
    )
    # `steps` on the wire since the first release; `increments` says what it is (a recipe has steps too)
    increments: int = Field(
        1,
        ge=1,
        le=50,
        validation_alias=AliasChoices("increments", "steps"),
        description="prune in this many increments, fine-tuning after each (also accepted as `steps`)",
    )
    schedule: Literal["linear", "cubic"] = Field(
        "cubic",
        description="how the sparsity grows over the increments; cubic prunes more early, when the network "
        "has the most redundancy (Zhu & Gupta 2017)",
    )
    finetune_epochs: int = Field(
        0,
        ge=0,
        le=1000,
        description="recovery training epochs after each increment: on the labels when the dataset has them, "
        "otherwise by distillation from the unpruned model",
    )
    learning_rate: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate for recovery training")
    batch_size: int = Field(64, ge=1, le=65536, description="batch size for recovery training and Taylor scores")
    sensitivity: bool = Field(
        False,
        description="also report, for every prunable layer, the accuracy (or agreement) when that layer "
        "alone is pruned at the target sparsity (needs a dataset)",
    )
    output: Literal["pt2", "onnx"] | None = Field(
        None,
        description="artifact format: by default onnx for an ONNX upload, else pt2; unstructured sparsity is "
        "stored compactly only in pt2",
    )
    storage: Literal["sparse", "dense"] = Field(
        "sparse",
        description="unstructured and 2:4 in pt2: sparse stores a bitmask and the non-zero values (the file "
        "shrinks with the sparsity; rebuilding the weights costs a little time per call); dense stores the zeros",
    )

    @model_validator(mode="after")
    def _check(self) -> PruneStep:
        if self.kind == "semi_structured_2_4" and self.sparsity not in (None, 0.5):
            raise ValueError("2:4 sparsity is 0.5 by definition; leave sparsity out")
        if self.target_macs_reduction is not None:
            if self.kind != "structured":
                raise ValueError("target_macs_reduction applies to structured pruning only")
            if self.sparsity is not None:
                raise ValueError("give sparsity or target_macs_reduction, not both")
        if self.scope == "sensitivity" and self.kind != "structured":
            raise ValueError("scope 'sensitivity' applies to structured pruning only")
        return self

    @property
    def amount(self) -> float:
        return self.sparsity if self.sparsity is not None else 0.5

    def trains(self) -> bool:
        return self.finetune_epochs > 0

    def summary(self) -> str:
        """A few words a job list shows for this step."""
        if self.target_macs_reduction is not None:
            return f"prune {self.kind} to {self.target_macs_reduction:.0%} fewer MACs"
        return f"prune {self.kind} {self.amount:.0%}"

    def needs_data(self) -> str | None:
        wants = [
            what
            for what, on in (
                ("criterion 'taylor'", self.criterion == "taylor"),
                ("finetune_epochs > 0", self.trains()),
                ("sensitivity", self.sensitivity),
                ("scope 'sensitivity'", self.scope == "sensitivity"),
            )
            if on
        ]
        return f"{' and '.join(wants)} need{'s' if len(wants) == 1 else ''} a dataset" if wants else None

    def excluded(self, name: str) -> bool:
        return any(fnmatchcase(name, pattern) for pattern in self.exclude)


def formats(step: PruneStep) -> frozenset[ModelFormat]:
    return FORMATS[step.kind]


def output_format(step: PruneStep, fmt: ModelFormat) -> ModelFormat:
    if step.output is not None:
        return ModelFormat(step.output)
    return ModelFormat.ONNX if fmt == ModelFormat.ONNX else ModelFormat.PT2


def check_model(step: PruneStep, info: ModelInfo) -> str | None:
    """Checks the step against what inspection found in the model (its prunable layers)."""
    layers = info.layers
    if not layers:
        return None
    unmatched = unmatched_exclude(step.exclude, [layer.name for layer in layers])
    if unmatched:
        return unmatched
    eligible = [layer for layer in layers if not step.excluded(layer.name)]
    if step.kind == "semi_structured_2_4":
        eligible = [layer for layer in eligible if layer.type == "Linear" and layer.in_ % 4 == 0]
        if not eligible:
            return "2:4 sparsity needs a Linear layer with a multiple of 4 inputs that is not excluded; there is none"
    # the output layer is always kept, so excluding everything else leaves nothing
    if len(eligible) <= 1:
        return "every prunable layer is excluded (the output layer is always kept): nothing is left to prune"
    return None


def check_order(step: PruneStep, earlier: list[tuple[BaseModel, ModelFormat]]) -> str | None:
    for s, fmt in earlier:
        if s.method == "quantize":
            return (
                "pruning needs float weights and trainable layers; prune before quantizing, e.g. "
                '[{"method": "prune", ...}, {"method": "quantize", ...}]'
            )
    return None
