"""What a loaded model is, independent of the file it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..contract.formats import ACCEPTED_FORMATS_TEXT, FILE_SUFFIX, ModelFormat
from ..contract.inspection import FormatFacts, InputInfo

__all__ = ["ACCEPTED_FORMATS_TEXT", "FILE_SUFFIX", "InputSpec", "LoadedModel", "ModelFormat", "module_device"]


DEFAULT_DYNAMIC_SIZE = 16  # only where a model said nothing and no data or input_shape is given


def module_device(module: nn.Module) -> torch.device:
    """Where a module's weights live (CPU for modules without tensors, such as onnxruntime wrappers)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


# named inputs whose example values are not token ids: a mask of ones, segment ids of zero
EXAMPLE_FILL = {"attention_mask": 1, "token_type_ids": 0, "position_ids": None}


@dataclass(frozen=True)
class InputSpec:
    """The tensor the engine feeds the model. `None` in `shape` is a dynamic dimension (the batch, usually).

    A model with several named inputs of one shape and dtype (`input_ids`, `attention_mask`, ...) is fed
    one packed tensor [batch, len(names), *sample]: entry i along dimension 1 is the input `names[i]`, and
    the module (see `bind_inputs`) hands each to the model by name. Every method, export and measurement
    then passes all inputs without knowing how many there are.
    """

    shape: tuple[int | None, ...]
    dtype: torch.dtype = torch.float32
    # exclusive upper bound for integer inputs such as token ids (the vocabulary size)
    high: int | None = None
    # what the model's dynamic non-batch dimensions are taken as for examples: from the dataset or the
    # upload's input_shape; None when nothing said (examples then use DEFAULT_DYNAMIC_SIZE)
    sizes: tuple[int, ...] | None = None
    names: tuple[str, ...] | None = None  # packed named inputs, in the order of dimension 1

    @property
    def vocabulary(self) -> int | None:
        """How many tokens the ids index, for a text model: an output this wide per token is logits."""
        return None if self.dtype.is_floating_point else self.high

    @property
    def sample_shape(self) -> tuple[int | None, ...]:
        return self.shape[1:]

    @property
    def symbolic(self) -> bool:
        """Some non-batch dimension is dynamic and nothing has said how large it is."""
        return self.sizes is None and any(d is None for d in self.sample_shape)

    def sized(self, sample_shape) -> InputSpec:
        """This spec with its dynamic dimensions taken from `sample_shape` (a dataset's, or input_shape[1:])."""
        sample_shape = tuple(int(d) for d in sample_shape)
        if len(sample_shape) != len(self.sample_shape) or not any(d is None for d in self.sample_shape):
            return self
        return dataclasses.replace(self, sizes=sample_shape)

    def packed(self, names: tuple[str, ...]) -> InputSpec:
        """This single-input spec as `len(names)` inputs of its shape, packed along dimension 1."""
        if self.names is not None:
            return dataclasses.replace(self, names=tuple(names)) if len(names) == len(self.names) else self
        sizes = None if self.sizes is None else (len(names), *self.sizes)
        return dataclasses.replace(self, shape=(self.shape[0], len(names), *self.shape[1:]), sizes=sizes, names=tuple(names))

    def example(self, batch: int, *, seed: int = 0) -> torch.Tensor:
        """A random input of this spec; dynamic non-batch dimensions take `sizes`, else DEFAULT_DYNAMIC_SIZE."""
        g = torch.Generator().manual_seed(seed)
        sizes = self.sizes or [DEFAULT_DYNAMIC_SIZE] * len(self.sample_shape)
        shape = (batch, *[d if d is not None else s for d, s in zip(self.sample_shape, sizes)])
        if self.dtype.is_floating_point:
            return torch.randn(shape, generator=g).to(self.dtype)
        x = torch.randint(0, self.high or 2, shape, generator=g, dtype=self.dtype)
        for i, name in enumerate(self.names or ()):
            if name in EXAMPLE_FILL:  # a random "mask" of token ids would mean nothing (or overflow)
                fill = EXAMPLE_FILL[name]
                x[:, i] = torch.arange(shape[-1]) if fill is None else fill
        return x

    def info(self) -> InputInfo:
        return InputInfo(
            shape=list(self.shape),
            dtype=str(self.dtype).removeprefix("torch."),
            high=self.high,
            names=list(self.names) if self.names else None,
        )


@dataclass
class LoadedModel:
    """A model ready to run: `module` takes one batched tensor and returns a tensor."""

    module: nn.Module
    format: ModelFormat
    input_spec: InputSpec | None
    size_bytes: int
    runtime: str  # what executes it: eager, torchscript, onnxruntime
    path: Path | None = None
    facts: FormatFacts = field(default_factory=FormatFacts)  # format-specific (architecture name, opsets, ...)
    tokenizer: object | None = None  # a Hugging Face upload's own tokenizer, for text datasets

    def bind_inputs(self, names: tuple[str, ...]) -> None:
        """Feeds a dataset's named inputs to the model by name, packed along dimension 1 (see InputSpec)."""
        from ..contract.errors import InvalidDatasetError

        bind = getattr(self.module, "bind_inputs", None)
        if bind is None:
            raise InvalidDatasetError(
                f"the dataset holds several named inputs ({', '.join(names)}), but this {self.format} model takes "
                "one tensor: store it as 'x'"
            )
        bind(tuple(names))  # raises InvalidDatasetError naming what does not match the model's inputs
        self.input_spec = self.require_spec().packed(tuple(names))

    def require_spec(self) -> InputSpec:
        if self.input_spec is None:
            from ..contract.errors import InvalidModelError

            raise InvalidModelError(
                f"this {self.format} model does not record its input shape: pass input_shape, e.g. [1, 3, 224, 224]"
            )
        return self.input_spec


def spec_of_inputs(
    names: list[str], shapes: list[tuple[int | None, ...]], dtypes: list[torch.dtype], described: list[str]
) -> InputSpec:
    """A model's input spec from its inputs (ONNX session inputs, a program's signature): one as it is; several
    (token ids, masks) packed along dimension 1 when they share a dtype and rank, each dimension fixed where
    every input fixes it alike. `described` says each input in the refusal."""
    from ..contract.errors import InvalidModelError

    if len(names) == 1:
        return InputSpec(shape=shapes[0], dtype=dtypes[0])
    if len(set(dtypes)) != 1 or len(set(map(len, shapes))) != 1 or not shapes[0]:
        raise InvalidModelError(
            f"the model takes {len(names)} inputs that differ in type or rank ({', '.join(described)}); several "
            "inputs are supported when they share one type and rank, as token ids and their masks do"
        )
    dims = tuple(d[0] if len(set(d)) == 1 else None for d in zip(*shapes))
    return InputSpec(shape=(None, *dims[1:]), dtype=dtypes[0]).packed(tuple(names))


def check_input_names(given: tuple[str, ...], accepted: tuple[str, ...], required: tuple[str, ...]) -> None:
    """The dataset's input names against the model's: every name known, every required one present."""
    from ..contract.errors import InvalidDatasetError

    unknown = [n for n in given if n not in accepted]
    missing = [n for n in required if n not in given]
    if unknown or missing or len(set(given)) != len(given):
        said = []
        if unknown:
            said.append(f"the model has no input named {', '.join(map(repr, unknown))}")
        if missing:
            said.append(f"the dataset lacks {', '.join(map(repr, missing))}")
        raise InvalidDatasetError(
            f"{'; '.join(said) or 'an input is named twice'}: the model takes {', '.join(accepted)}"
            f"{' (required: ' + ', '.join(required) + ')' if required else ''}; name the dataset's arrays after them"
        )
