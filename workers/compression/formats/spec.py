"""What a loaded model is, independent of the file it came from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..contract.formats import ACCEPTED_FORMATS_TEXT, FILE_SUFFIX, ModelFormat

__all__ = ["ACCEPTED_FORMATS_TEXT", "FILE_SUFFIX", "InputSpec", "LoadedModel", "ModelFormat", "module_device"]


DEFAULT_DYNAMIC_SIZE = 16  # only where a model said nothing and no data or input_shape is given


def module_device(module: nn.Module) -> torch.device:
    """Where a module's weights live (CPU for modules without tensors, such as onnxruntime wrappers)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@dataclass(frozen=True)
class InputSpec:
    """The model's single tensor input. `None` in `shape` is a dynamic dimension (the batch, usually)."""

    shape: tuple[int | None, ...]
    dtype: torch.dtype = torch.float32
    # exclusive upper bound for integer inputs such as token ids (the vocabulary size)
    high: int | None = None
    # what the model's dynamic non-batch dimensions are taken as for examples: from the dataset or the
    # upload's input_shape; None when nothing said (examples then use DEFAULT_DYNAMIC_SIZE)
    sizes: tuple[int, ...] | None = None

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

    def example(self, batch: int, *, seed: int = 0) -> torch.Tensor:
        """A random input of this spec; dynamic non-batch dimensions take `sizes`, else DEFAULT_DYNAMIC_SIZE."""
        g = torch.Generator().manual_seed(seed)
        sizes = self.sizes or [DEFAULT_DYNAMIC_SIZE] * len(self.sample_shape)
        shape = (batch, *[d if d is not None else s for d, s in zip(self.sample_shape, sizes)])
        if self.dtype.is_floating_point:
            return torch.randn(shape, generator=g).to(self.dtype)
        return torch.randint(0, self.high or 2, shape, generator=g, dtype=self.dtype)

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": str(self.dtype).removeprefix("torch."), "high": self.high}


@dataclass
class LoadedModel:
    """A model ready to run: `module` takes one batched tensor and returns a tensor."""

    module: nn.Module
    format: ModelFormat
    input_spec: InputSpec | None
    size_bytes: int
    runtime: str  # what executes it: eager, torchscript, onnxruntime
    path: Path | None = None
    info: dict = field(default_factory=dict)  # format-specific facts (architecture name, opset, ...)

    def require_spec(self) -> InputSpec:
        if self.input_spec is None:
            from ..contract.errors import InvalidModelError

            raise InvalidModelError(
                f"this {self.format} model does not record its input shape: pass input_shape, e.g. [1, 3, 224, 224]"
            )
        return self.input_spec
