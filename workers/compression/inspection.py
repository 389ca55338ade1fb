"""What the service shows about an upload once a worker has looked at it: the model's format, input and
parameters (after one forward pass, so a model that cannot run is caught at upload), or the dataset's
shape and labels."""

from __future__ import annotations

from pathlib import Path

import torch

from .contract.errors import InvalidModelError
from .data import load_dataset
from .formats import load_model
from .formats.spec import module_device
from .measure.metrics import count_params, first_tensor
from .pruning.layers import inspect_layers

MAX_LAYERS_LISTED = 5000


def inspect_model(path: str | Path, **load) -> dict:
    model = load_model(path, **load)
    params, nonzero = count_params(model.module)
    info = {
        "format": model.format.value,
        "runtime": model.runtime,
        "size_bytes": model.size_bytes,
        "params": params,
        "nonzero_params": nonzero,
        "input": model.input_spec.to_dict() if model.input_spec else None,
        **model.info,
    }
    if model.input_spec is None:
        info["notes"] = [*info.get("notes", []), "the input shape is not recorded in this format: give input_shape, or a dataset to a job"]
        return info
    if model.input_spec.symbolic and model.format.value == "onnx":
        # a detector with dynamic height and width may only run at the sizes it was built for (multiples
        # of 32, say): a made-up size would fail it; the sizes come from the job's dataset instead
        dims = [i + 1 for i, d in enumerate(model.input_spec.sample_shape) if d is None]
        info["notes"] = [
            *info.get("notes", []),
            f"input dimensions {dims} are dynamic: they are taken from the job's dataset "
            "(or give input_shape at upload to check the model runs now)"
        ]
        return info
    with torch.inference_mode():
        try:
            out = first_tensor(model.module(model.input_spec.example(1).to(module_device(model.module))))
        except Exception as e:
            raise InvalidModelError(
                f"the model does not run on an input of shape {list(model.input_spec.example(1).shape)}: "
                f"{type(e).__name__}: {e}" + "".join(f" ({n})" for n in info.get("notes", []))
            ) from None
    info["output_shape"] = [None, *out.shape[1:]]
    # the prunable layers, so a recipe naming layers is checked at submission (last: lifting changes the module)
    if (layers := inspect_layers(model)) is not None:
        info["layers"] = layers[:MAX_LAYERS_LISTED]
    return info


def inspect_dataset(path: str | Path) -> dict:
    from .contract.errors import InvalidDatasetError, UnsupportedFormatError
    from .contract.sniff import detect_dataset_format

    try:
        kind = detect_dataset_format(path)
    except UnsupportedFormatError as e:
        raise InvalidDatasetError(e.message, code="invalid_dataset") from None
    if kind in ("jsonl", "csv"):  # tokenized only for a job, with its model's tokenizer
        from .text import read_rows

        return read_rows(Path(path), kind).describe()
    return load_dataset(path).describe()
