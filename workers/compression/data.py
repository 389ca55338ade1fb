"""Datasets: `.npz` / `.safetensors` with `x` (and optional integer `y`), or a zipped image folder.

Everything is validated up front with messages that say what to change.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from .contract.errors import InvalidDatasetError, UnsupportedFormatError
from .contract.sniff import DATASET_FORMATS_TEXT, detect_dataset_format
from .formats.spec import InputSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 25_000_000  # one image (5000 x 5000); PIL refuses more before decoding it
MAX_IMAGE_FILE_BYTES = 64 * 2**20  # one image file as stored, decompressed from the zip
MAX_DATASET_BYTES = 2 * 2**30  # the decoded float32 tensor of a whole image folder
ACCEPTED = DATASET_FORMATS_TEXT


@dataclass
class Dataset:
    x: torch.Tensor
    y: torch.Tensor | None = None
    classes: list[str] | None = None  # image folders: the folder names, index = label

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Dataset:
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.classes)

    def split(self, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(rest, held out): a random `fraction` of the samples held out, the same every run."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = len(self) - max(1, int(round(fraction * len(self))))

        def take(idx):
            return Dataset(self.x[idx], None if self.y is None else self.y[idx], self.classes)

        return take(order[:cut]), take(order[cut:])

    def describe(self) -> dict:
        return {
            "samples": len(self),
            "sample_shape": list(self.x.shape[1:]),
            "dtype": str(self.x.dtype).removeprefix("torch."),
            "labels": self.y is not None,
            "num_classes": int(self.y.max()) + 1 if self.y is not None else None,
            "classes": self.classes,
        }


def load_dataset(path: str | Path, input_spec: InputSpec | None = None) -> Dataset:
    path = Path(path)
    if not path.is_file():
        raise InvalidDatasetError(f"no dataset file at {path}", code="not_found")
    try:
        kind = detect_dataset_format(path)
    except UnsupportedFormatError as e:
        raise InvalidDatasetError(e.message, code="invalid_dataset") from None
    if kind == "image_zip":
        return _read_image_folder(path, input_spec)
    x, y = _read_npz(path) if kind == "npz" else _read_safetensors(path)
    return _validated(x, y, input_spec)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as npz:  # object arrays would need pickle: refused
            if "x" not in npz.files:
                raise InvalidDatasetError(f"the .npz has no array named 'x' (found {sorted(npz.files)})")
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except InvalidDatasetError:
        raise
    except ValueError as e:
        raise InvalidDatasetError(f"the .npz holds object arrays, which need pickle and are refused: {e}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise InvalidDatasetError(f"corrupt .npz archive: {e}") from None
    return x, y


def _read_safetensors(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidDatasetError(f"corrupt .safetensors file: {e}") from None
    if "x" not in tensors:
        raise InvalidDatasetError(f"the .safetensors file has no tensor named 'x' (found {sorted(tensors)})")
    return tensors["x"], tensors.get("y")


def _validated(x: np.ndarray, y: np.ndarray | None, spec: InputSpec | None) -> Dataset:
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
    dataset = Dataset(tx, ty)
    if spec is not None:
        check_fits(dataset, spec)
    return dataset


def check_fits(dataset: Dataset, spec: InputSpec, num_outputs: int | None = None) -> None:
    """Raises when the samples cannot feed the model, or labels exceed its classes."""
    sample = tuple(dataset.x.shape[1:])
    want = spec.sample_shape
    if len(sample) != len(want) or any(w is not None and w != s for w, s in zip(want, sample)):
        shown = ["any" if w is None else w for w in want]
        raise InvalidDatasetError(
            f"samples in 'x' have shape {list(sample)} but the model takes {shown} per sample "
            f"(input {['batch' if d is None else d for d in spec.shape]})"
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
