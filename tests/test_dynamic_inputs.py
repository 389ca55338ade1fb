"""A detector-like ONNX model with dynamic height and width that only runs at multiples of 32: inspection
does not probe it with a made-up size, and jobs take the size from the dataset."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.engine import run_recipe
from workers.compression import load_model
from workers.compression.inspection import inspect_model


class StrideThirtyTwo(nn.Module):
    """Down by 32, up by 32, concatenated with the input: like a YOLO neck, it fails unless H, W % 32 == 0."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(*[nn.Conv2d(3 if i == 0 else 8, 8, 3, stride=2, padding=1) for i in range(5)])
        self.up = nn.Upsample(scale_factor=32, mode="nearest")
        self.head = nn.Conv2d(11, 6, 1)

    def forward(self, x):
        return self.head(torch.cat([x, self.up(self.down(x))], dim=1))


def onnx_detector(path):
    torch.onnx.export(
        StrideThirtyTwo().eval(),
        (torch.zeros(1, 3, 64, 64),),
        str(path),
        dynamo=False,
        input_names=["images"],
        dynamic_axes={"images": {0: "n", 2: "h", 3: "w"}},
    )
    return path


def test_inspection_does_not_probe_dynamic_dims_with_a_made_up_size(tmp_path):
    path = onnx_detector(tmp_path / "det.onnx")
    info = inspect_model(path)
    assert info.input.shape == [None, 3, None, None]
    assert any("dynamic" in n and "dataset" in n for n in info.notes), info
    # with input_shape at upload, the model is run at that size, and must run
    info = inspect_model(path, input_shape=[1, 3, 96, 128])
    assert info.output_shape == [None, 6, 96, 128]


def test_a_job_takes_dynamic_sizes_from_the_dataset(tmp_path, quick):
    path = onnx_detector(tmp_path / "det.onnx")
    data = tmp_path / "images.npz"
    np.savez(data, x=np.random.default_rng(0).random((24, 3, 64, 64), dtype=np.float32))
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}
    report = run_recipe(path, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    assert report["input"]["shape"] == [None, 3, None, None]
    step = report["steps"][0]
    assert step["measurement"]["agreement_metric"] == "cosine" and step["measurement"]["agreement"] > 0.9
    artifact = load_model(tmp_path / "out" / step["artifact_id"])
    with torch.no_grad():
        assert artifact.module(torch.zeros(2, 3, 64, 64)).shape == (2, 6, 64, 64)


def test_a_batch_fixed_by_the_exporter_is_made_dynamic(tmp_path, quick):
    """CenterFace ships with its batch fixed at 10 (and many exporters fix it at 1): the model is run at
    batch 1 and N all the same, and inspection says what was changed."""
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval(), (torch.zeros(10, 3, 16, 16),),
                      str(path), dynamo=False, input_names=["input.1"])
    info = inspect_model(path)
    assert info.input.shape == [None, 3, 16, 16] and info.output_shape == [None, 4, 16, 16]
    assert any("fixed at 10" in n for n in info.notes), info
    data = tmp_path / "x.npz"
    np.savez(data, x=np.random.default_rng(0).random((20, 3, 16, 16), dtype=np.float32))
    report = run_recipe(path, {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}, data_path=data,
                        out_dir=tmp_path / "out", settings=quick)
    assert report["baseline"]["latency_ms"]["b1"] is not None and report["baseline"]["latency_ms"]["bN"] is not None
