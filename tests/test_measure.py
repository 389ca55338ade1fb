"""The measurement can say "slower" as well as "faster", and reports every field of the protocol."""

from __future__ import annotations

import torch
from torch import nn

from workers.compression import InputSpec, LoadedModel, ModelFormat, load_dataset, load_model, measure_models


class Repeated(nn.Module):
    """Same outputs as `inner`, `times` times the work."""

    def __init__(self, inner: nn.Module, times: int):
        super().__init__()
        self.inner, self.times = inner, times

    def forward(self, x):
        out = self.inner(x)
        for _ in range(self.times - 1):
            out = self.inner(x)
        return out


def wrap(module, size=1000):
    return LoadedModel(
        module=module, format=ModelFormat.PT2, input_spec=InputSpec((None, 1, 8, 8)), size_bytes=size, runtime="eager"
    )


def test_slower_candidate_reports_speedup_below_one(cnn, digits_npz, quick):
    data = load_dataset(digits_npz)
    measurements, ratios = measure_models([wrap(cnn), wrap(Repeated(cnn, 4))], data, quick)
    assert ratios[0].speedup_b1 == 1.0
    assert ratios[1].speedup_b1 < 0.8 and ratios[1].speedup_bN < 0.8
    assert measurements[1].agreement == 1.0 and measurements[1].accuracy == measurements[0].accuracy


def test_faster_candidate_reports_speedup_above_one(cnn, digits_npz, quick):
    data = load_dataset(digits_npz)
    _, ratios = measure_models([wrap(Repeated(cnn, 4)), wrap(cnn)], data, quick)
    assert ratios[1].speedup_b1 > 1.25 and ratios[1].speedup_bN > 1.25


def test_measurement_fields(cnn_pt2, digits_npz, quick):
    model = load_model(cnn_pt2)
    data = load_dataset(digits_npz)
    (m,), (r,) = measure_models([model], data, quick)
    expected_params = sum(p.numel() for p in model.module.parameters())
    assert m.params == expected_params and 0 < m.nonzero_params <= m.params
    # two 3x3 convs on 8x8 and two Linear layers, batch 1
    assert m.macs == 16 * 9 * 64 + 32 * 16 * 9 * 64 + 512 * 64 + 64 * 10
    assert m.latency_ms.b1.p50 > 0 and m.latency_ms.bN.p50 > 0 and m.latency_ms.batch == quick.batch
    assert m.latency_ms.b1.p50 <= m.latency_ms.b1.p90 <= m.latency_ms.b1.p99
    assert m.throughput_per_s > 0 and m.peak_mem_bytes > m.params * 4 * 0.9
    assert m.size_bytes == cnn_pt2.stat().st_size and r.size_ratio == 1.0
    assert 0.85 < m.accuracy <= 1.0 and m.agreement is None
    assert m.env["threads"] == 2 and "torch" in m.env["versions"] and m.env["cpu"]
    assert m.device == "cpu" and m.runtime == "eager"


def test_without_labels_agreement_is_reported(cnn, quick):
    # embedding-style output [N, 4, 8]: cosine similarity instead of top-1
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32))

        def forward(self, x):
            return self.body(x).view(-1, 4, 8)

    a, b = Embed().eval(), Embed().eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        b.body[1].weight.add_(0.01 * torch.randn_like(b.body[1].weight))
    measurements, _ = measure_models([wrap(a), wrap(b)], None, quick)
    assert measurements[1].agreement_metric == "cosine"
    assert 0.9 < measurements[1].agreement < 1.0
    assert measurements[1].accuracy is None
    assert measurements[1].cosine_similarity == measurements[1].agreement


def test_classifier_agreement_is_top1_with_cosine_beside(cnn, mlp, digits_npz, quick):
    measurements, _ = measure_models([wrap(cnn), wrap(mlp)], load_dataset(digits_npz), quick)
    assert measurements[1].agreement_metric == "top1"
    assert 0.5 < measurements[1].agreement < 1.0 and measurements[1].cosine_similarity < 1.0
