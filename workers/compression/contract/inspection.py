"""What an inspection found in an upload, typed: `ModelInfo` for a model, `DatasetInfo` for a dataset.

The sandboxed child builds one and sends it in its `inspected` event; the parent validates it against
these models, bounds included, before anything stores it (workers/supervisor.py), so nothing a child
writes is served as fact without it. The API serves it as the upload's `info`, and submission checks a
recipe against it (a step's `exclude` patterns against `layers`, `auto` against `format`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .formats import ModelFormat
from .vocabulary import Runtime

# bounds on what a child may claim: generous for real models (a 2 B-parameter LM has ~200 layers to list,
# the longest tokenizer vocabularies ~260k), tight enough that a forged answer cannot bloat a row
MAX_LAYERS = 5000
MAX_NOTES = 50
MAX_NOTE = 2000
MAX_NAME = 500
MAX_DIMS = 8
MAX_OUTPUTS = 64
MAX_CLASSES = 10_000

Name = Annotated[str, Field(max_length=MAX_NAME)]
Dim = Annotated[int, Field(ge=1, le=2**31)]
Shape = Annotated[list[Dim | None], Field(max_length=MAX_DIMS, description="None: a dynamic dimension")]
Count = Annotated[int, Field(ge=0, le=2**53)]
Notes = Annotated[list[Annotated[str, Field(max_length=MAX_NOTE)]], Field(max_length=MAX_NOTES)]


class _Info(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class Isolation(_Info):
    """The sandbox a job (or an inspection) ran in: `bwrap` with its layers, or `off` when an operator
    disabled it (SQUEEZE_SANDBOX=off)."""

    mode: Literal["bwrap", "off"]
    layers: list[Annotated[str, Field(max_length=200)]] = Field([], max_length=32)


class InputInfo(_Info):
    """The input a model is run with: batch first (None), then its dimensions (None where dynamic)."""

    shape: Shape
    dtype: Annotated[str, Field(max_length=32)]
    high: int | None = Field(None, ge=0, le=2**31, description="integer inputs (token ids): values are below this")
    names: list[Name] | None = Field(
        None, max_length=MAX_OUTPUTS, description="a model of several named inputs (input_ids, attention_mask, ...)"
    )


class OutputInfo(_Info):
    index: int = Field(ge=0, le=MAX_OUTPUTS)
    shape: Shape


class LayerInfo(_Info):
    """A prunable layer (Linear / Conv), so a recipe's layer names are checked at submission."""

    name: Name
    type: Annotated[str, Field(max_length=64)]
    in_: Count = Field(alias="in", description="input features or channels")
    out: Count = Field(description="output features or channels")
    output: bool | None = Field(None, description="the model's output layer: pruning keeps it whole")
    heads: int | None = Field(
        None, ge=1, le=4096, description="an attention query/key/value projection: its head count (whole heads go)"
    )
    block: Name | None = Field(
        None, description="its role in repeated blocks, block index as '#' (model.layers.#.self_attn.q_proj)"
    )


class FormatFacts(_Info):
    """What a loader found that only its format records (the engine's `LoadedModel.facts`)."""

    notes: Notes = []
    arch: Name | None = Field(None, description="weights: the architecture; Hugging Face: the model class")
    arch_kwargs: dict[str, Any] | None = None
    model_type: Name | None = Field(None, description="Hugging Face: config.model_type")
    tokenizer: bool | None = Field(None, description="Hugging Face: the upload carries its tokenizer")
    task: Literal["causal_lm"] | None = None
    max_sequence_length: Count | None = None
    opsets: dict[Annotated[str, Field(max_length=100)], int] | None = Field(None, description="ONNX: opset per domain")
    producer: Name | None = Field(None, description="ONNX: what wrote the file")
    sparse_weights_rebuilt: Count | None = Field(None, description=".pt2: pruned layers stored sparse, rebuilt")


class ModelInfo(FormatFacts):
    kind: Literal["model"] = "model"
    format: ModelFormat
    runtime: Runtime
    size_bytes: Count
    params: Count
    nonzero_params: Count
    input: InputInfo | None = Field(None, description="None: the format does not record it (give input_shape)")
    output_shape: Shape | None = Field(None, description="the first output's shape, batch first")
    outputs: list[OutputInfo] | None = Field(None, max_length=MAX_OUTPUTS, description="every output's shape")
    layers: list[LayerInfo] | None = Field(None, max_length=MAX_LAYERS)
    isolation: Isolation | None = Field(None, description="the sandbox the inspection ran in (set by the worker)")


class Tokenization(_Info):
    """How a text dataset was tokenized for a job, with its model's tokenizer."""

    padding: str
    truncation: bool
    max_length: Count
    truncated: Count
    longest: Count
    inputs: list[Name]
    pad_token: str | None = None


class DatasetInfo(_Info):
    kind: Literal["dataset"] = "dataset"
    samples: Count
    sample_shape: Shape | None = Field(None, description="one sample's shape (arrays and images)")
    dtype: Annotated[str, Field(max_length=32)] | None = None
    labels: bool
    num_classes: Count | None = None
    classes: list[Annotated[str, Field(max_length=MAX_NAME)]] | None = Field(None, max_length=MAX_CLASSES)
    inputs: list[Name] | None = Field(None, max_length=MAX_OUTPUTS, description="named inputs (input_ids, ...)")
    text: bool | None = Field(None, description="a text dataset (.jsonl / .csv), tokenized for each job")
    text_chars: Count | None = Field(None, description="a text dataset: its characters (about 4 a token in English)")
    columns: list[Name] | None = Field(None, max_length=8)
    tokenization: Tokenization | None = Field(None, description="in a report: how the texts were tokenized")
    held_out_fraction: float | None = Field(
        None, ge=0, le=1, description="in a report: the part of the dataset held out from training to score on"
    )
    isolation: Isolation | None = Field(None, description="the sandbox the inspection ran in (set by the worker)")


UploadInfo = Annotated[ModelInfo | DatasetInfo, Field(discriminator="kind")]
