"""Datasets load from .npz, .safetensors and zipped image folders; bad ones fail with a clear message."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from workers.compression import InputSpec, InvalidDatasetError, load_dataset
from workers.compression.data import check_fits

SPEC = InputSpec((None, 1, 8, 8))


def npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_npz_with_labels(tmp_path):
    x = np.random.rand(10, 1, 8, 8).astype(np.float32)
    data = load_dataset(npz(tmp_path, x=x, y=np.arange(10) % 3), SPEC)
    assert data.x.shape == (10, 1, 8, 8) and data.y.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert data.describe()["num_classes"] == 3


def test_safetensors_without_labels(tmp_path):
    path = tmp_path / "d.safetensors"
    save_file({"x": np.random.rand(4, 1, 8, 8).astype(np.float64)}, str(path))
    data = load_dataset(path, SPEC)
    assert data.y is None and data.x.dtype.is_floating_point and len(data) == 4


def _png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (20, 12), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def test_image_folder_zip(tmp_path):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for cls, value in (("cat", 10), ("dog", 200)):
            for i in range(3):
                zf.writestr(f"root/{cls}/{i}.png", _png(value))
    data = load_dataset(path, InputSpec((None, 3, 16, 16)))
    assert data.classes == ["cat", "dog"]
    assert data.x.shape == (6, 3, 16, 16) and sorted(data.y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert 0.0 <= float(data.x.min()) and float(data.x.max()) <= 1.0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((3, 1, 8, 8), np.float32)}, "no array named 'x'"),
        ({"x": np.array([["a", "b"]] * 3)}, "dtype"),
        ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "empty"),
        ({"x": np.zeros((3, 1, 8, 8), np.float32), "y": np.array([0.5, 1.0, 2.0])}, "must be integers"),
        ({"x": np.zeros((3, 1, 8, 8), np.float32), "y": np.array([0, 1])}, "one integer per sample"),
        ({"x": np.zeros((3, 1, 8, 8), np.float32), "y": np.array([0, -1, 2])}, ">= 0"),
        ({"x": np.zeros((3, 1, 7, 7), np.float32)}, r"shape \[1, 7, 7\] but the model takes \[1, 8, 8\]"),
        ({"x": np.full((3, 1, 8, 8), np.nan, np.float32)}, "NaN"),
    ],
)
def test_invalid_npz(tmp_path, arrays, message):
    with pytest.raises(InvalidDatasetError, match=message):
        load_dataset(npz(tmp_path, **arrays), SPEC)


def test_labels_out_of_range_for_the_model(tmp_path):
    data = load_dataset(npz(tmp_path, x=np.zeros((3, 1, 8, 8), np.float32), y=np.array([0, 4, 12])), SPEC)
    with pytest.raises(InvalidDatasetError, match="label 12 is out of range: the model has 10 outputs"):
        check_fits(data, SPEC, num_outputs=10)


def test_object_arrays_need_pickle_and_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(InvalidDatasetError, match="pickle"):
        load_dataset(path)


def test_corrupt_and_empty_files(tmp_path):
    good = npz(tmp_path, x=np.zeros((3, 1, 8, 8), np.float32))
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InvalidDatasetError):
        load_dataset(corrupt)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(InvalidDatasetError, match="empty"):
        load_dataset(empty)
    other = tmp_path / "other.bin"
    other.write_bytes(b"just some text")
    with pytest.raises(InvalidDatasetError, match="npz"):
        load_dataset(other)


def test_zip_without_images(tmp_path):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(InvalidDatasetError, match="no images"):
        load_dataset(path)
