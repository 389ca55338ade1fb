"""Box outputs judged by their detections: a YOLOv8-style head's detections after compression scored against
the original's by mAP@0.5 (measure/detection.py), on heads the tests write and on a real detector's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.engine import run_recipe
from workers.compression import load_model
from workers.compression.data import Dataset
from workers.compression.formats import InputSpec, LoadedModel, ModelFormat
from workers.compression.measure import measure_models
from workers.compression.measure.detection import decode, detection_agreement, grid_cells, is_yolo_head, map50

from .zoo import photos, wheel_member

CLASSES = 3


def head(boxes: list[list[tuple]], size: int = 64) -> torch.Tensor:
    """A [N, 4 + classes, cells] head holding the given (cx, cy, w, h, class, score) boxes, the rest empty."""
    cells = grid_cells(size, size)
    out = torch.zeros(len(boxes), 4 + CLASSES, cells)
    out[:, 2:4] = 4.0  # empty cells: small boxes that score nothing
    for n, image in enumerate(boxes):
        for k, (cx, cy, w, h, cls, score) in enumerate(image):
            out[n, :4, k * 7] = torch.tensor([cx, cy, w, h])
            out[n, 4 + cls, k * 7] = score
    return out


IMAGES = torch.zeros(2, 3, 64, 64)
FOUND = [[(20, 20, 10, 10, 0, 0.9), (40, 40, 12, 8, 1, 0.8)], [(30, 30, 16, 16, 2, 0.7)]]


def test_the_head_is_recognised_by_its_cells():
    assert grid_cells(320, 320) == 2100 and grid_cells(70, 70) == 9 * 9 + 5 * 5 + 3 * 3  # strides round up
    assert is_yolo_head(head(FOUND), IMAGES)
    assert not is_yolo_head(head(FOUND), torch.zeros(2, 3, 96, 96))  # cells of another size: not this head
    assert not is_yolo_head(torch.zeros(2, 10), IMAGES)


def test_map50_counts_lost_moved_and_relabelled_boxes():
    reference = decode(head(FOUND))
    assert [len(b) for b, _, _ in reference] == [2, 1]
    assert map50(decode(head(FOUND)), reference) == pytest.approx(1.0)
    slightly = [[(21, 20, 10, 11, 0, 0.6), (40, 41, 12, 8, 1, 0.5)], [(30, 30, 15, 16, 2, 0.9)]]
    assert map50(decode(head(slightly)), reference) == pytest.approx(1.0)  # scores and a pixel do not matter
    lost = [[(20, 20, 10, 10, 0, 0.9)], [(30, 30, 16, 16, 2, 0.7)]]
    assert map50(decode(head(lost)), reference) == pytest.approx(2 / 3)  # class 1's only box is gone
    moved = [[(20, 20, 10, 10, 0, 0.9), (52, 40, 12, 8, 1, 0.8)], [(30, 30, 16, 16, 2, 0.7)]]
    assert map50(decode(head(moved)), reference) == pytest.approx(2 / 3)  # IoU below 0.5
    relabelled = [[(20, 20, 10, 10, 1, 0.9), (40, 40, 12, 8, 0, 0.8)], [(30, 30, 16, 16, 2, 0.7)]]
    assert map50(decode(head(relabelled)), reference) == pytest.approx(1 / 3)
    extra = [[*FOUND[0], (10, 50, 8, 8, 0, 0.95)], FOUND[1]]  # a false box scored above the true one
    assert map50(decode(head(extra)), reference) == pytest.approx((0.5 + 1 + 1) / 3)
    assert map50(reference, decode(head([[], []]))) is None  # nothing found by the original: no mAP


class TinyDetector(nn.Module):
    """A YOLOv8-shaped model: heads at strides 8/16/32, boxes in pixels, sigmoid class scores."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=8, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(2)])
        self.heads = nn.ModuleList([nn.Conv2d(8, 4 + CLASSES, 1) for _ in range(3)])

    def forward(self, x):
        features, outs = [self.stem(x)], []
        for down in self.down:
            features.append(down(torch.relu(features[-1])))
        for stride, f, conv in zip((8, 16, 32), features, self.heads):
            y = conv(f)
            gy, gx = torch.meshgrid(torch.arange(y.shape[2]), torch.arange(y.shape[3]), indexing="ij")
            cx = (gx + torch.sigmoid(y[:, 0])) * stride
            cy = (gy + torch.sigmoid(y[:, 1])) * stride
            wh = torch.exp(y[:, 2:4].clamp(max=3)) * stride * 2
            scores = torch.sigmoid(y[:, 4:] * 4)
            outs.append(torch.cat([cx[:, None], cy[:, None], wh, scores], 1).flatten(2))
        return torch.cat(outs, 2)


def loaded(net: nn.Module) -> LoadedModel:
    spec = InputSpec(shape=(None, 3, 64, 64), dtype=torch.float32)
    return LoadedModel(module=net.eval(), format=ModelFormat.PT2, input_spec=spec, size_bytes=1, runtime="eager")


def test_a_detector_is_measured_by_its_detections(quick):
    net = TinyDetector()
    data = Dataset(torch.rand(16, 3, 64, 64, generator=torch.Generator().manual_seed(1)), None)
    assert sum(len(b) for b, _, _ in decode(net(data.x))) > 10  # the test means something: boxes are found
    noisy = TinyDetector()
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    (base, same, other), _ = measure_models([loaded(net), loaded(TinyDetector()), loaded(noisy)], data, quick)
    for m in (same, other):
        assert m.agreement_metric.startswith("mAP50 vs the original's") and m.outputs[0].kind == "boxes"
    assert same.agreement == pytest.approx(1.0)
    assert other.agreement < 0.9 and other.cosine_similarity > other.agreement  # cosine hides what was lost


def test_a_real_detector_int8_is_scored_by_map(tmp_path, quick):
    """nudenet's YOLOv8n (320n.onnx, dynamic height and width) on 16 real photos, quantized to int8. Its
    output Concat joins pixel boxes and 0-1 scores; quantized, it gave the scores the boxes' step and lost 4
    of the 6 detections (mAP50 0.3) at an output cosine of 0.999, so it stays float (onnx_int8.output_joins)."""
    model = wheel_member("nudenet==3.4.2", "nudenet/320n.onnx", tmp_path)
    data = tmp_path / "photos.npz"
    np.savez(data, x=photos((320, 320), 16))
    x = torch.from_numpy(np.load(data)["x"])
    original = load_model(model).module(x)
    agreement = detection_agreement(original, original, x)
    assert agreement is not None and agreement[1] >= 3, agreement  # the photos hold something it detects
    report = run_recipe(
        model,
        {"steps": [{"method": "quantize", "scheme": "int8_static", "calibration_batches": 1}]},
        data_path=data,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    measured = report["steps"][0]["measurement"]
    assert measured["agreement_metric"] == f"mAP50 vs the original's {agreement[1]} detections", measured
    assert measured["outputs"][0]["kind"] == "boxes" and measured["agreement"] >= 0.8, measured
