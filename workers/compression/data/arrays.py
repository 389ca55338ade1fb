"""Dataset files read into numpy arrays and checked, without PyTorch: an upload's inspection (data/inspect.py)
describes a dataset from these alone, and data/loading.py turns them into the tensors a job uses.
`.npz` / `.safetensors` with `x` (and optional integer `y`) or several arrays named after the model's
inputs, or a zipped image folder. Everything is validated up front with messages that say what to change."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..contract.errors import InvalidDatasetError, UnsupportedFormatError
from ..contract.inspection import DatasetInfo
from ..contract.sniff import DATASET_FORMATS_TEXT
from ..contract.zip_check import check_single_archive

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 25_000_000  # one image (5000 x 5000); PIL refuses more before decoding it
MAX_IMAGE_FILE_BYTES = 64 * 2**20  # one image file as stored, decompressed from the zip
MAX_DATASET_BYTES = 2 * 2**30  # the decoded float32 tensor of a whole image folder
# the arrays of an .npz once inflated: a compressed archive is small on the wire and may be huge in memory,
# so its members' declared sizes are summed against this before one is read
MAX_ARRAY_BYTES = 512 * 2**20
ACCEPTED = DATASET_FORMATS_TEXT


@dataclass
class ArrayData:
    """A dataset's arrays as read: `x` (float32, or int64 token ids; several named inputs stacked along axis 1),
    `y` (int64 class indices) when labelled, the class names of an image folder, the input names."""

    x: np.ndarray
    y: np.ndarray | None = None
    classes: list[str] | None = None
    names: tuple[str, ...] | None = None

    def describe(self) -> DatasetInfo:
        return DatasetInfo(
            samples=len(self.x),
            sample_shape=list(self.x.shape[1:]),
            dtype=str(self.x.dtype),
            labels=self.y is not None,
            num_classes=int(self.y.max()) + 1 if self.y is not None else None,
            classes=self.classes,
            inputs=list(self.names) if self.names else None,
        )


def read_arrays(path: Path, kind: str) -> ArrayData:
    """An `.npz` or `.safetensors` file's arrays, assembled and checked."""
    arrays = read_npz(path) if kind == "npz" else read_safetensors(path)
    x, y, names = assembled(arrays, "array" if kind == "npz" else "tensor")
    x, y = checked(x, y)
    return ArrayData(x, y, names=names)


def read_npz(path: Path) -> dict[str, np.ndarray]:
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


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidDatasetError(f"corrupt .safetensors file: {e}") from None


def assembled(arrays: dict[str, np.ndarray], what: str) -> tuple[np.ndarray, np.ndarray | None, tuple | None]:
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


def checked(x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`x` as float32 (or int64 token ids) and `y` as int64 class indices, after the checks a person can act on."""
    if x.ndim < 1 or len(x) == 0:
        raise InvalidDatasetError("'x' is empty: it needs at least one sample along its first axis")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise InvalidDatasetError("'x' contains NaN or infinite values")
        x = np.ascontiguousarray(x, dtype=np.float32)
    elif x.dtype.kind in "iu":
        x = np.ascontiguousarray(x, dtype=np.int64)
    else:
        raise InvalidDatasetError(f"'x' has dtype {x.dtype}; use a float (or integer token id) array")
    if y is not None:
        if y.dtype.kind not in "iu":
            raise InvalidDatasetError(f"labels 'y' must be integers (class indices), not {y.dtype}")
        if y.ndim != 1 or len(y) != len(x):
            raise InvalidDatasetError(
                f"labels 'y' must be one integer per sample: got shape {list(y.shape)} for {len(x)} samples"
            )
        if y.min() < 0:
            raise InvalidDatasetError(f"labels 'y' must be >= 0, found {int(y.min())}")
        y = y.astype(np.int64)
    return x, y


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


def read_image_folder(path: Path, channels: int = 3, size: tuple[int, int] | None = None) -> ArrayData:
    """One sub-folder per class; images are resized to `size` (width, height: the model's input; else the
    first image's) with `channels` (1 or 3), scaled to [0, 1]."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
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
    return ArrayData(xs, np.asarray(ys, dtype=np.int64), classes=classes)
