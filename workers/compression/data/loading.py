"""Datasets as a job holds them: the arrays of data/arrays.py (or tokenized text, data/text.py) as tensors,
checked against the model they feed."""

from __future__ import annotations

from pathlib import Path

import torch

from ..contract.errors import InvalidDatasetError, UnsupportedFormatError
from ..contract.sniff import detect_dataset_format
from ..contract.vocabulary import JobErrorCode
from ..formats.spec import InputSpec
from .arrays import ArrayData, read_arrays, read_image_folder
from .dataset import Dataset
from .text import tokenized


def load_dataset(path: str | Path, input_spec: InputSpec | None = None, tokenizer=None) -> Dataset:
    """The dataset, checked against `input_spec` when given (and when its named inputs are the spec's:
    a dataset with several inputs is checked once the model is bound to them). Text needs `tokenizer`."""
    path = Path(path)
    if not path.is_file():
        raise InvalidDatasetError(f"no dataset file at {path}", code=JobErrorCode.NOT_FOUND)
    try:
        kind = detect_dataset_format(path)
    except UnsupportedFormatError as e:
        raise InvalidDatasetError(e.message, code=JobErrorCode.INVALID_DATASET) from None
    if kind == "image_zip":
        return _image_folder(path, input_spec)
    if kind in ("jsonl", "csv"):
        dataset = tokenized(path, kind, input_spec, tokenizer)
    else:
        dataset = _tensors(read_arrays(path, kind))
    if input_spec is not None and input_spec.names == dataset.names:
        check_fits(dataset, input_spec)
    return dataset


def _tensors(data: ArrayData) -> Dataset:
    y = None if data.y is None else torch.from_numpy(data.y)
    return Dataset(torch.from_numpy(data.x), y, data.classes, data.names)


def _image_folder(path: Path, spec: InputSpec | None) -> Dataset:
    """Images at the model's input size and channels when it fixes them."""
    channels, size = 3, None
    if spec is not None and len(spec.shape) == 4:
        channels = spec.shape[1] or 3
        if spec.shape[2] and spec.shape[3]:
            size = (spec.shape[3], spec.shape[2])
    dataset = _tensors(read_image_folder(path, channels, size))
    if spec is not None:
        check_fits(dataset, spec)
    return dataset


def check_fits(dataset: Dataset, spec: InputSpec, num_outputs: int | None = None) -> None:
    """Raises when the samples cannot feed the model, or labels exceed its classes."""
    sample = tuple(dataset.x.shape[1:])
    want = spec.sample_shape
    if len(sample) != len(want) or any(w is not None and w != s for w, s in zip(want, sample)):
        if spec.names:  # the packing dimension is the library's, not the user's: shown per input
            sample, want = sample[1:], want[1:]
        shown = ["any" if w is None else w for w in want]
        where = f"'{dataset.names[0]}'" if dataset.names else "'x'"
        raise InvalidDatasetError(
            f"samples in {where} have shape {list(sample)} but the model takes {shown} per sample "
            f"(input {['batch' if d is None else d for d in spec.shape if not spec.names or d != len(spec.names)]})"
        )
    if spec.dtype.is_floating_point != dataset.x.dtype.is_floating_point:
        kind = "float" if spec.dtype.is_floating_point else "integer"
        raise InvalidDatasetError(f"the model takes {kind} inputs but 'x' is {dataset.x.dtype}")
    if spec.high is not None and not dataset.x.dtype.is_floating_point and int(dataset.x.max()) >= spec.high:
        raise InvalidDatasetError(f"token ids in 'x' go up to {int(dataset.x.max())}; the vocabulary has {spec.high}")
    if num_outputs is not None and dataset.y is not None and int(dataset.y.max()) >= num_outputs:
        raise InvalidDatasetError(
            f"label {int(dataset.y.max())} is out of range: the model has {num_outputs} outputs "
            f"(classes 0..{num_outputs - 1})"
        )
