"""Before any work: check the recipe against the model's format, load the baseline and the data, hold out
evaluation data when a step trains, and settle the input spec the whole run uses."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..contract.errors import EngineError, InvalidDatasetError, StepFailedError
from ..contract.formats import TRANSFORMERS_FORMATS
from ..contract.load import LoadOptions
from ..contract.measure import MeasureSettings
from ..contract.recipe import METHODS, Recipe, check_recipe
from ..contract.sniff import detect_format
from ..contract.vocabulary import Device, JobErrorCode, Runtime
from ..data import Dataset, check_fits, load_dataset
from ..formats import InputSpec, LoadedModel, load_model
from ..formats.spec import module_device
from ..measure.metrics import first_tensor

HELD_OUT_FRACTION = 0.2  # of the dataset, for measuring recipes that train without an eval dataset
MIN_SAMPLES_TO_HOLD_OUT = 50


@dataclass
class Prepared:
    """What every later stage reads: the baseline as loaded, the data, and how to load any artifact alike."""

    recipe: Recipe
    model_path: Path
    baseline: LoadedModel
    spec: InputSpec
    data: Dataset | None
    eval_data: Dataset | None
    held_out: float | None
    threads: int
    device: str
    load: LoadOptions

    def load_original(self) -> LoadedModel:
        """A fresh copy of the uploaded model (methods may change their input in place; the baseline must not)."""
        return self._complete(load_model(self.model_path, **self._load_kwargs(self.load.model_dump(exclude_none=True))))

    def load_artifact(self, path: Path, runtime: str | None = None) -> LoadedModel:
        """An artifact (pt2/onnx/torchscript) as the measurement runs it: only the shape may be missing."""
        sizes = self.spec.sizes or [1] * len(self.spec.sample_shape)
        shape = [1, *[d or size for d, size in zip(self.spec.sample_shape, sizes)]]
        model = self._complete(load_model(path, **self._load_kwargs({"input_shape": shape})))
        if runtime == Runtime.INDUCTOR:  # int8 PT2E graphs are fast only once inductor lowers them
            from ..quantization.pt2e import compile_for_cpu

            model.module, model.runtime = compile_for_cpu(model.module), Runtime.INDUCTOR
        return model

    def _load_kwargs(self, options: dict) -> dict:
        return dict(options, threads=self.threads, device=self.device)

    def _complete(self, model: LoadedModel) -> LoadedModel:
        names = self.spec.names
        # a fresh copy of a Hugging Face upload, or a model with several inputs of its own (an ONNX int8 of an
        # ONNX upload); an artifact exported from the packed wrapper takes the packed tensor as it is
        if names and (model.format in TRANSFORMERS_FORMATS or getattr(model.module, "packed_names", None)):
            model.bind_inputs(names)
        if model.input_spec is None or model.input_spec.dtype == self.spec.dtype:
            spec = (
                self.spec
                if model.input_spec is None
                else dataclasses.replace(model.input_spec, high=self.spec.high, sizes=self.spec.sizes, names=names)
            )
            model.input_spec = spec
        return model


def prepare(
    model_path: Path,
    recipe: Recipe,
    load: LoadOptions,
    settings: MeasureSettings,
    data_path: Path | None,
    eval_data_path: Path | None,
) -> Prepared:
    if settings.device == Device.CUDA and not torch.cuda.is_available():
        raise EngineError("device 'cuda' was asked for but this worker has no CUDA GPU; use 'cpu'", code=JobErrorCode.NO_GPU)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    threads = settings.threads or torch.get_num_threads()
    # everything that can be checked is checked before any work
    check_recipe(recipe, load.format or detect_format(model_path), has_data=data_path is not None)
    baseline = load_model(model_path, **load.model_dump(exclude_none=True), threads=threads, device=settings.device)
    data = load_dataset(data_path, baseline.input_spec, baseline.tokenizer) if data_path else None
    eval_data = load_dataset(eval_data_path, baseline.input_spec, baseline.tokenizer) if eval_data_path else data
    held_out = None
    if eval_data is data and data is not None and any(METHODS[s.method].trains(s) for s in recipe.steps):
        # a model trained on the data would be graded on what it learnt: hold part of it out
        if len(data) >= MIN_SAMPLES_TO_HOLD_OUT:
            data, eval_data = data.split(HELD_OUT_FRACTION)
            held_out = HELD_OUT_FRACTION
    spec = _settle_spec(baseline, data or eval_data, eval_data)
    if data is not None or eval_data is not None:
        num_outputs = _num_outputs(baseline, spec)
        for d in {id(d): d for d in (data, eval_data) if d is not None}.values():
            check_fits(d, spec, num_outputs)
    return Prepared(recipe, model_path, baseline, spec, data, eval_data, held_out, threads, settings.device, load)


def _settle_spec(model: LoadedModel, data: Dataset | None, other: Dataset | None = None) -> InputSpec:
    """The model's input spec, completed from the data for formats that do not record one; a dataset's
    named inputs bound to the model's by name; dynamic dimensions (height, width, sequence length) take
    the data's sizes."""
    if data is None:
        return model.require_spec()
    if other is not None and other is not data and other.names != data.names:
        raise InvalidDatasetError(
            f"the training and evaluation datasets hold different inputs ({_inputs(data)} and {_inputs(other)})"
        )
    if data.names:
        model.bind_inputs(data.names)
    elif model.input_spec is not None and model.input_spec.names:
        raise InvalidDatasetError(
            f"the model takes {len(model.input_spec.names)} inputs ({', '.join(model.input_spec.names)}); the dataset "
            "holds one: store one array per input, named after it"
        )
    if model.input_spec is None:
        model.input_spec = InputSpec(shape=(None, *data.x.shape[1:]), dtype=data.x.dtype)
    else:
        # the data's sizes replace any default (a sequence length of 128, an input_shape's) for dynamic dims
        model.input_spec = dataclasses.replace(model.input_spec, sizes=None).sized(data.x.shape[1:])
    return model.require_spec()


def _inputs(data: Dataset) -> str:
    return ", ".join(data.names) if data.names else "one input, 'x'"


def _num_outputs(model: LoadedModel, spec: InputSpec) -> int | None:
    with torch.inference_mode():
        try:
            out = first_tensor(model.module(spec.example(1).to(module_device(model.module))))
        except Exception as e:
            raise StepFailedError(f"the model does not run on an input of shape {list(spec.shape)}: {e}") from None
    return int(out.shape[1]) if out.ndim == 2 else None
