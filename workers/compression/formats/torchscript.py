"""TorchScript archives. Deprecated upstream in favour of torch.export; accepted because many models
ship this way, and written only when a recipe asks for it."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.vocabulary import Runtime
from .archive import torch_reads_the_same
from .spec import InputSpec, LoadedModel, ModelFormat


def load_torchscript(path: Path, input_spec: InputSpec | None) -> LoadedModel:
    # torch.jit.load's unpickler is TorchScript's own restricted one: it rebuilds tensors and
    # TorchScript classes, never arbitrary Python callables.
    torch_reads_the_same(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise InvalidModelError(f"cannot load this TorchScript archive: {type(e).__name__}: {e}") from None
    return LoadedModel(
        module=module.eval(),
        format=ModelFormat.TORCHSCRIPT,
        input_spec=input_spec,
        size_bytes=path.stat().st_size,
        runtime=Runtime.TORCHSCRIPT,
        path=path,
    )


def save_torchscript(module: nn.Module, spec: InputSpec, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(module, torch.jit.ScriptModule):
            scripted = module
        else:
            example = spec.example(2)
            try:
                scripted = torch.jit.trace(module, (example,), check_trace=False)
            except Exception as e:
                raise InvalidModelError(f"torch.jit.trace failed: {type(e).__name__}: {e}") from None
        torch.jit.save(scripted, str(path))
    return path
