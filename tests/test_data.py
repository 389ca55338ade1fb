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
    assert data.describe().num_classes == 3


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
        ({"y": np.zeros(3, np.int64)}, "no array named 'x'"),
        ({"x": np.zeros((3, 8), np.int64), "attention_mask": np.ones((3, 8), np.int64)}, "'x' is the name for"),
        ({"input_ids": np.zeros((3, 8), np.int64), "attention_mask": np.ones((3, 9), np.int64)}, "share one shape"),
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


def test_an_image_over_the_pixel_cap_is_refused_before_it_is_decoded(tmp_path):
    # 7000 x 7000 of one colour compresses to ~150 KB: what a 95 KB two-image zip held
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (7000, 7000), 7).save(buf, format="PNG")
    path = tmp_path / "huge.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a/0.png", buf.getvalue())
        zf.writestr("b/0.png", buf.getvalue())
    with pytest.raises(InvalidDatasetError, match="7000x7000 pixels; at most 25,000,000"):
        load_dataset(path)


def test_an_image_folder_over_the_memory_budget_is_refused_up_front(tmp_path, monkeypatch):
    import workers.compression.data.arrays as arrays

    monkeypatch.setattr(arrays, "MAX_DATASET_BYTES", 6 * 3 * 64 * 64 * 4 - 1)  # one byte short of 6 images
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for cls in ("cat", "dog"):
            for i in range(3):
                zf.writestr(f"{cls}/{i}.png", _png(10))
    with pytest.raises(InvalidDatasetError, match="would take .* GiB as float32"):
        load_dataset(path, InputSpec((None, 3, 64, 64)))
    assert load_dataset(path, InputSpec((None, 3, 32, 32))).x.shape == (6, 3, 32, 32)


def test_a_zip_bomb_is_refused_before_anything_is_extracted(tmp_path):
    from workers.compression.contract.errors import InvalidModelError
    from workers.compression.formats.archive import extract_zip

    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model/config.json", "{}")
        zf.writestr("model/model.safetensors", b"\0" * (200 * 2**20))  # 200 MiB of zeros: ~200 KB stored
    assert path.stat().st_size < 2**20
    dest = tmp_path / "out"
    with pytest.raises(InvalidModelError, match="expands 1000-fold|expands \\d+-fold"):
        extract_zip(path, dest)
    assert not any(dest.rglob("*.safetensors"))


def test_a_dataset_is_inspected_by_a_child_that_never_imports_torch(tmp_path):
    """Every upload's inspection is a sandboxed child; a dataset's reads the file with numpy alone, so it does
    not pay PyTorch's 2-3 s import (the same child a worker starts, run here with `-X importtime`)."""
    import json
    import subprocess
    import sys

    from workers.compression.contract.protocol import InspectDataset, Spec

    files = {"data.npz": None, "images.zip": None, "text.jsonl": None}
    np.savez(tmp_path / "data.npz", x=np.zeros((4, 3), np.float32), y=np.array([0, 1, 2, 1]))
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as zf:
        for cls in ("cat", "dog"):
            zf.writestr(f"{cls}/0.png", _png(10))
    (tmp_path / "text.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    for name in files:
        spec = tmp_path / f"{name}.spec.json"
        spec.write_text(Spec(work=InspectDataset(path=str(tmp_path / name))).model_dump_json())
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "workers.child", str(spec)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        files[name] = json.loads(out.stdout.splitlines()[-1])
        imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
        assert "torch" not in imported and "numpy" in imported, name
    assert files["data.npz"]["info"]["samples"] == 4 and files["data.npz"]["info"]["num_classes"] == 3
    assert files["images.zip"]["info"]["classes"] == ["cat", "dog"]
    assert files["text.jsonl"]["info"]["text"] is True and files["text.jsonl"]["info"]["num_classes"] == 2
