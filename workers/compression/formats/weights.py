"""safetensors weights + an architecture name from torchvision or timm.

The architecture comes from the caller (`arch`, `arch_kwargs`) or from the file's own metadata keys
`arch` and `arch_kwargs` (JSON), so `safetensors.torch.save_file(sd, f, metadata={"arch": "resnet18"})`
is self-describing. Names are `resnet18`, `torchvision:resnet18` or `timm:resnet18`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.inspection import FormatFacts
from ..contract.sniff import safetensors_metadata
from ..contract.vocabulary import Runtime
from .spec import InputSpec, LoadedModel, ModelFormat


def build_architecture(arch: str, kwargs: dict) -> tuple[nn.Module, tuple[int, ...]]:
    """Returns the randomly initialised module and its default input shape (batch 1)."""
    source, _, name = arch.rpartition(":")
    source = source or "torchvision"
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidModelError("arch_kwargs must be a JSON object")
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise InvalidModelError(f"unknown torchvision architecture {name!r}; see torchvision.models.list_models()")
        try:
            return torchvision.models.get_model(name, weights=None, **kwargs), (1, 3, 224, 224)
        except (TypeError, ValueError) as e:
            raise InvalidModelError(f"cannot build {arch} with {kwargs}: {e}") from None
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise InvalidModelError(f"unknown timm architecture {name!r}; see timm.list_models()")
        try:
            # pretrained=False: weights come from the upload, never from a hub
            module = timm.create_model(name, pretrained=False, **kwargs)
        except (TypeError, ValueError, RuntimeError) as e:
            raise InvalidModelError(f"cannot build {arch} with {kwargs}: {e}") from None
        size = tuple(getattr(module, "pretrained_cfg", {}).get("input_size", (3, 224, 224)))
        return module, (1, *size)
    raise InvalidModelError(f"unknown architecture source {source!r}; use torchvision:NAME or timm:NAME")


def load_weights(
    path: Path,
    *,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        meta = safetensors_metadata(path)
    except (ValueError, OSError) as e:
        raise InvalidModelError(f"corrupt safetensors header: {e}") from None
    arch = arch or meta.get("arch")
    if not arch:
        raise InvalidModelError(
            "safetensors weights need an architecture name: pass arch (e.g. 'resnet18' or 'timm:resnet18') "
            "or store it in the file's metadata under 'arch'"
        )
    if arch_kwargs is None:
        try:
            arch_kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        except json.JSONDecodeError as e:
            raise InvalidModelError(f"metadata arch_kwargs is not JSON: {e}") from None
    module, default_shape = build_architecture(arch, arch_kwargs)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidModelError(f"cannot read safetensors weights: {e}") from None
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise InvalidModelError(f"the weights do not fit {arch} {arch_kwargs}: {e}") from None
    if result.missing_keys or result.unexpected_keys:
        raise InvalidModelError(
            f"the weights do not fit {arch} {arch_kwargs}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    shape = tuple(input_shape or default_shape)
    return LoadedModel(
        module=module.eval(),
        format=ModelFormat.SAFETENSORS,
        input_spec=InputSpec(shape=(None, *shape[1:]), dtype=torch.float32),
        size_bytes=path.stat().st_size,
        runtime=Runtime.EAGER,
        path=path,
        facts=FormatFacts(arch=arch, arch_kwargs=arch_kwargs),
    )


def save_weights(module: nn.Module, path: Path, *, arch: str, arch_kwargs: dict) -> Path:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"arch": arch, "arch_kwargs": json.dumps(arch_kwargs)})
    return path
