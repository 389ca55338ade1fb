"""What the service shows about a model upload once a worker has looked at it: its format, inputs, outputs,
parameters and prunable layers (after one forward pass, so a model that cannot run is caught at upload),
typed as the contract's `ModelInfo`. A dataset's inspection is torch-free: data/inspect.py."""

from __future__ import annotations

from pathlib import Path

import torch

from .contract.errors import InvalidModelError
from .contract.inspection import MAX_LAYERS, MAX_OUTPUTS, ModelInfo, OutputInfo
from .formats import LoadedModel, load_model
from .formats.spec import module_device
from .measure.metrics import all_tensors, count_params
from .pruning.layers import inspect_layers


def inspect_model(path: str | Path, **load) -> ModelInfo:
    model = load_model(path, **load)
    params, nonzero = count_params(model.module)
    info = ModelInfo(
        **model.facts.model_dump(exclude_defaults=True),
        format=model.format,
        runtime=model.runtime,
        size_bytes=model.size_bytes,
        params=params,
        nonzero_params=nonzero,
        input=model.input_spec.info() if model.input_spec else None,
    )
    if model.input_spec is None:
        info.notes.append("the input shape is not recorded in this format: give input_shape, or a dataset to a job")
        return info
    if model.input_spec.symbolic and model.format.value == "onnx":
        # a detector with dynamic height and width may only run at the sizes it was built for (multiples
        # of 32, say): a made-up size would fail it; the sizes come from the job's dataset instead
        dims = [i + 1 for i, d in enumerate(model.input_spec.sample_shape) if d is None]
        info.notes.append(
            f"input dimensions {dims} are dynamic: they are taken from the job's dataset "
            "(or give input_shape at upload to check the model runs now)"
        )
        return info
    outputs = _run_once(model, info.notes)
    info.output_shape = [None, *outputs[0].shape[1:]]
    info.outputs = [OutputInfo(index=i, shape=[None, *o.shape[1:]]) for i, o in enumerate(outputs[:MAX_OUTPUTS])]
    # the prunable layers, so a recipe naming layers is checked at submission (last: lifting changes the module)
    if (layers := inspect_layers(model)) is not None:
        info.layers = layers[:MAX_LAYERS]
    return info


def _run_once(model: LoadedModel, notes: list[str]) -> list[torch.Tensor]:
    example = model.input_spec.example(1)
    with torch.inference_mode():
        try:
            outputs = all_tensors(model.module(example.to(module_device(model.module))))
        except Exception as e:
            raise InvalidModelError(
                f"the model does not run on an input of shape {list(example.shape)}: "
                f"{type(e).__name__}: {e}" + "".join(f" ({n})" for n in notes)
            ) from None
    if not outputs:
        raise InvalidModelError("the model returned no tensor")
    return outputs
