"""Datasets: `.npz` / `.safetensors` with `x` (and optional integer `y`) or several arrays named after the
model's inputs, a zipped image folder, or `.jsonl` / `.csv` text tokenized by the model's own tokenizer.

Everything is validated up front with messages that say what to change.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from ..contract.errors import InvalidDatasetError, UnsupportedFormatError
from ..contract.sniff import DATASET_FORMATS_TEXT, detect_dataset_format
from ..contract.vocabulary import JobErrorCode
from ..contract.zip_check import check_single_archive
from ..formats.spec import InputSpec
from .dataset import Dataset
from .text import read_rows, tokenized

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 25_000_000  # one image (5000 x 5000); PIL refuses more before decoding it
MAX_IMAGE_FILE_BYTES = 64 * 2**20  # one image file as stored, decompressed from the zip
MAX_DATASET_BYTES = 2 * 2**30  # the decoded float32 tensor of a whole image folder
# the arrays of an .npz once inflated: a compressed archive is small on the wire and may be huge in memory,
# so its members' declared sizes are summed against this before one is read
MAX_ARRAY_BYTES = 512 * 2**20
ACCEPTED = DATASET_FORMATS_TEXT


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
        return _read_image_folder(path, input_spec)
    if kind in ("jsonl", "csv"):
        dataset = tokenized(path, kind, input_spec, tokenizer)
        if input_spec is not None and input_spec.names == dataset.names:
            check_fits(dataset, input_spec)
        return dataset
    arrays = _read_npz(path) if kind == "npz" else _read_safetensors(path)
    return _validated(*_assembled(arrays, "array" if kind == "npz" else "tensor"), input_spec)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    _check_archive(path)
    _check_npz_sizes(path)
    try:
        with np.load(path, allow_pickle=False) as npz:  # object arrays would need pickle: refused
            return {name: npz[name] for name in npz.files}
    except ValueError as e:
        raise InvalidDatasetError(f"the .npz holds object arrays, which need pickle and are refused: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InvalidDatasetError(f"corrupt .npz archive: {e}") from None


def _check_archive(path: Path) -> None:
    try:
        check_single_archive(path)
    except UnsupportedFormatError as e:
        raise InvalidDatasetError(e.message, code=e.code) from None


def _check_npz_sizes(path: Path) -> None:
    """Each array's size as its .npy header declares it, summed against MAX_ARRAY_BYTES before any is
    read, and each member's inflated size against that declaration: a 1 MB .npz that inflates to 1 GiB is
    refused from its headers, without inflating it."""
    total = 0
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else (np.lib.format.read_array_header_2_0)
                    )
                    shape, _, dtype = read_header(f)
                except (ValueError, EOFError, OSError) as e:
                    raise InvalidDatasetError(f"{info.filename!r} is not a .npy array: {e}") from None
            declared = math.prod(shape) * dtype.itemsize
            if info.file_size > declared + 4096:  # the header and padding, no more
                raise InvalidDatasetError(f"{info.filename!r} holds more bytes than its header declares")
            total += declared
            if total > MAX_ARRAY_BYTES:
                raise InvalidDatasetError(
                    f"the arrays would take {total / 2**20:.0f} MiB in memory; at most "
                    f"{MAX_ARRAY_BYTES / 2**20:.0f} MiB are accepted (use fewer samples: calibration needs hundreds)"
                )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidDatasetError(f"corrupt .safetensors file: {e}") from None


def _assembled(arrays: dict[str, np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
    """(x, y, names): `x` alone is the single input; several arrays named after the model's inputs
    (`input_ids`, `attention_mask`, ...) are stacked along axis 1, in the file's order."""
    found = sorted(arrays)
    y = arrays.pop("y", None)
    if not arrays:
        raise InvalidDatasetError(f"the file has no {what} named 'x' (found {found}): 'x' holds the model's input")
    if "x" in arrays and len(arrays) > 1:
        raise InvalidDatasetError(
            f"'x' is the name for a model's only input, but the file also holds {sorted(set(arrays) - {'x'})}: "
            f"with several inputs, name every {what} after the model's input it feeds"
        )
    if len(arrays) == 1:
        return next(iter(arrays.values())), y, None
    names = tuple(arrays)
    shapes = {n: a.shape for n, a in arrays.items()}
    if len(set(shapes.values())) != 1 or len({a.dtype.kind for a in arrays.values()}) != 1:
        described = ", ".join(f"{n} {a.dtype} {list(a.shape)}" for n, a in arrays.items())
        raise InvalidDatasetError(
            f"the named inputs must share one shape and kind of dtype (as token ids and their masks do): {described}"
        )
    return np.stack([arrays[n] for n in names], axis=1), y, names


def _validated(x: np.ndarray, y: np.ndarray | None, names: tuple | None, spec: InputSpec | None) -> Dataset:
    if x.ndim < 1 or len(x) == 0:
        raise InvalidDatasetError("'x' is empty: it needs at least one sample along its first axis")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InvalidDatasetError("'x' contains NaN or infinite values")
        tx = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    elif x.dtype.kind in "iu":
        tx = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
    else:
        raise InvalidDatasetError(f"'x' has dtype {x.dtype}; use a float (or integer token id) array")
    ty = None
    if y is not None:
        if y.dtype.kind not in "iu":
            raise InvalidDatasetError(f"labels 'y' must be integers (class indices), not {y.dtype}")
        if y.ndim != 1 or len(y) != len(x):
            raise InvalidDatasetError(
                f"labels 'y' must be one integer per sample: got shape {list(y.shape)} for {len(x)} samples"
            )
        if y.min() < 0:
            raise InvalidDatasetError(f"labels 'y' must be >= 0, found {int(y.min())}")
        ty = torch.from_numpy(y.astype(np.int64))
    dataset = Dataset(tx, ty, names=names)
    if spec is not None and spec.names == names:
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


def _image_tensor(count: int, channels: int, size: tuple[int, int], first) -> np.ndarray:
    """The whole folder's float32 tensor, allocated once, after checking it fits the budget: every image
    is resized to the first one's size (or the model's), so count x channels x size is known up front."""
    need = count * channels * size[0] * size[1] * 4
    if need > MAX_DATASET_BYTES:
        raise InvalidDatasetError(
            f"{count} images at {size[0]}x{size[1]} (the size of {first}, or the model's input) would take "
            f"{need / 2**30:.1f} GiB as float32; at most {MAX_DATASET_BYTES / 2**30:.0f} GiB is accepted. "
            "Resize the images to the model's input size, or upload fewer"
        )
    return np.empty((count, channels, size[1], size[0]), dtype=np.float32)


def _read_image_folder(path: Path, spec: InputSpec | None) -> Dataset:
    """One sub-folder per class; images are resized to the model's input and scaled to [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    channels, size = 3, None
    if spec is not None and len(spec.shape) == 4:
        channels = spec.shape[1] or 3
        if spec.shape[2] and spec.shape[3]:
            size = (spec.shape[3], spec.shape[2])
    _check_archive(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise InvalidDatasetError(f"corrupt archive: {e}") from None
    with zf:
        members = [
            PurePosixPath(i.filename)
            for i in zf.infolist()
            if not i.is_dir()
            and PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES
            and "__MACOSX" not in i.filename
        ]
        if not members:
            raise InvalidDatasetError(f"the archive holds no images; upload {ACCEPTED}")
        if len(members) > MAX_IMAGES:
            raise InvalidDatasetError(f"the archive holds {len(members)} images; at most {MAX_IMAGES} are accepted")
        depth = {len(m.parts) for m in members}
        # class = the folder right above the file; a single shared root folder is allowed
        if depth == {2}:
            label_of = {m: m.parts[0] for m in members}
        elif depth == {3} and len({m.parts[0] for m in members}) == 1:
            label_of = {m: m.parts[1] for m in members}
        else:
            raise InvalidDatasetError(
                "images must sit in one sub-folder per class: CLASS/IMAGE (optionally under one root folder)"
            )
        if channels not in (1, 3):
            raise InvalidDatasetError(
                f"image folders feed models with 1 (grey) or 3 (RGB) channels; this model takes {channels}"
            )
        too_big = [i.filename for i in zf.infolist() if i.file_size > MAX_IMAGE_FILE_BYTES]
        if too_big:  # read before the header is parsed: bound what one member may inflate to
            raise InvalidDatasetError(
                f"image {too_big[0]} is {zf.getinfo(too_big[0]).file_size:,} bytes uncompressed; "
                f"at most {MAX_IMAGE_FILE_BYTES:,} an image are accepted"
            )
        classes = sorted(set(label_of.values()))
        xs, ys = None, []
        for k, member in enumerate(sorted(members)):
            try:
                with Image.open(io.BytesIO(zf.read(str(member)))) as img:  # the header only, so far
                    if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:  # PIL itself only warns below 2x this
                        raise InvalidDatasetError(
                            f"image {member} is {img.size[0]}x{img.size[1]} pixels; at most {MAX_IMAGE_PIXELS:,} "
                            "pixels an image are accepted: resize it to the model's input size"
                        )
                    if size is None:
                        size = img.size
                    if xs is None:
                        xs = _image_tensor(len(members), channels, size, member)
                    img = img.convert("L" if channels == 1 else "RGB")
                    if img.size != size:
                        img = img.resize(size, Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError, zipfile.BadZipFile) as e:
                raise InvalidDatasetError(f"cannot read image {member}: {e}") from None
            xs[k] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
            ys.append(classes.index(label_of[member]))
    x = torch.from_numpy(xs)
    dataset = Dataset(x, torch.tensor(ys, dtype=torch.int64), classes)
    if spec is not None:
        check_fits(dataset, spec)
    return dataset


__all__ = ["ACCEPTED", "Dataset", "check_fits", "load_dataset", "read_rows", "tokenized"]
