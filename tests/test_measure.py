"""The measurement can say "slower" as well as "faster", and reports every field of the protocol."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from workers.compression import (
    InputSpec,
    LoadedModel,
    MeasureSettings,
    ModelFormat,
    load_dataset,
    load_model,
    measure_models,
)

# runs alone, after the parallel part of the suite: it times models and judges what contention does to the figures
pytestmark = pytest.mark.exclusive


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
    assert m.env["threads"] == quick.threads and "torch" in m.env["versions"] and m.env["cpu"]
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


# ---------------------------------------------------------------- uncertainty, noise, plausibility


def test_median_interval_is_order_statistics():
    from workers.compression.measure.timing import median_interval

    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0, 6.0]) == (3.5, (1.0, 6.0))  # n=6: min..max (97 %)
    median, (lo, hi) = median_interval([float(v) for v in range(1, 41)])
    assert median == 20.5 and (lo, hi) == (14.0, 27.0)  # n=40: the 14th from either end


def test_every_speedup_has_an_interval_that_holds_it(cnn, digits_npz, quick):
    _, ratios = measure_models([wrap(Repeated(cnn, 4)), wrap(cnn)], load_dataset(digits_npz), quick)
    r = ratios[1]
    for key, s in (("b1", r.speedup_b1), ("bN", r.speedup_bN)):
        lo, hi = r.speedup_ci95[key]
        assert lo <= s <= hi and r.rounds[key] >= 6
    assert ratios[0].speedup_ci95 == {} and not ratios[0].noisy


class CachedAtBatchOne(nn.Module):
    """Answers batch 1 from a cache (no work) and computes larger batches: a b1 'speedup' no graph can buy."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.cached = inner, None

    def forward(self, x):
        if x.shape[0] == 1:
            if self.cached is None:
                self.cached = self.inner(x)
            return self.cached
        return self.inner(x)


def test_an_implausible_ratio_is_timed_again_and_then_flagged(cnn, digits_npz, quick):
    measurements, ratios = measure_models(
        [wrap(Repeated(cnn, 2)), wrap(CachedAtBatchOne(cnn))], load_dataset(digits_npz), quick
    )
    r = ratios[1]
    assert r.speedup_b1 > 4 * r.speedup_bN  # what the model does
    assert measurements[1].timing.remeasured and r.noisy
    assert any("implausible" in n and "persisted" in n for n in r.noise), r.noise


def test_a_plausible_ratio_is_not_flagged(cnn, digits_npz, quick):
    measurements, ratios = measure_models([wrap(Repeated(cnn, 2)), wrap(cnn)], load_dataset(digits_npz), quick)
    assert not measurements[1].timing.remeasured
    assert not any("implausible" in n for n in ratios[1].noise)


def test_timing_records_how_it_was_done(cnn, digits_npz):
    # rounds of >= 0.1 s: shorter ones are too short for /proc/stat's 10 ms ticks and record no load
    settings = MeasureSettings(batch=16, rounds=6, max_rounds=8, seconds_per_model=0.9, warmup=2, threads=2)
    (m, _), _ = measure_models([wrap(cnn), wrap(cnn)], load_dataset(digits_npz), settings)
    t = m.timing
    assert t.threads == 2 and t.threads_b1 == 1  # the digits CNN takes well under 1 ms at batch 1
    assert t.rounds["b1"] >= 6 and t.rounds["bN"] >= 6 and set(t.discarded) == {"b1", "bN"}
    assert t.affinity and t.other_load is not None and "quartile" in t.statistic


@contextmanager
def cpu_hogs(n: int, seconds: float = 120.0):
    """`n` bounded busy loops in their own processes, killed on exit."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    time.sleep(0.3)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_under_a_cpu_hog_a_speedup_is_flagged_or_agrees_with_the_quiet_one(cnn, digits_npz):
    # the digits CNN against four times its work: a true 4x speedup, timed quiet and beside busy loops
    # on every core; the loaded figure is either flagged noisy or within 25 % of the quiet one
    settings = MeasureSettings(batch=16, rounds=8, seconds_per_model=0.5, warmup=2, threads=2)
    data = load_dataset(digits_npz)
    models = [wrap(Repeated(cnn, 4)), wrap(cnn)]
    _, (_, quiet) = measure_models(models, data, settings)
    with cpu_hogs(os.cpu_count() or 2):
        (base, _), (_, loaded) = measure_models(models, data, settings)
    assert base.timing.other_load >= 0.8  # the hogs were seen
    for key in ("b1", "bN"):
        q, ld = getattr(quiet, f"speedup_{key}"), getattr(loaded, f"speedup_{key}")
        assert 2.5 < q < 6, (key, q)
        assert loaded.noisy or abs(ld / q - 1) <= 0.25, (key, q, ld, loaded.speedup_ci95, loaded.noise)
    # flagged, and saying why: the hogs seen in the rounds, or the interval they widened
    assert loaded.noisy and any("other processes" in n or "contention" in n or "interval" in n for n in loaded.noise)


def test_verdict_is_inconclusive_when_the_interval_cannot_tell():
    from workers.compression.contract.measure import Ratios
    from workers.compression.results import verdict

    def ratios(s, lo, hi, size=2.0):
        return Ratios(size_ratio=size, speedup_b1=s, speedup_bN=s, speedup_ci95={"b1": (lo, hi), "bN": (lo, hi)})

    assert verdict(ratios(2.0, 1.9, 2.1)) == "faster_and_smaller"
    assert verdict(ratios(1.3, 0.9, 1.4)) == "inconclusive"  # claims faster, may be no change
    assert verdict(ratios(3.0, 2.0, 3.2)) == "inconclusive"  # wider than a factor of 1.5
    assert verdict(ratios(1.0, 0.97, 1.03)) == "smaller_only"  # no change, and that is known
    assert verdict(ratios(1.0, 0.97, 1.03, size=1.0)) == "no_gain"
    # reports stored before intervals existed still get a verdict from the medians
    assert verdict(Ratios(size_ratio=1.0, speedup_b1=1.5, speedup_bN=1.4)) == "faster_only"


def test_an_artifact_that_lost_its_quality_is_not_called_faster_and_smaller():
    """mobilenet_v2 pruned on 160 unlabelled images kept 0 % top-1 agreement and was reported
    faster_and_smaller: quality past the step's budget (or 10 points without one) is the verdict."""
    from pathlib import Path

    from workers.compression.contract.measure import Latency, Measurement, Ratios
    from workers.compression.contract.recipe import quantize_step
    from workers.compression.methods import StepOutput
    from workers.compression.results import Measured, artifact_entry

    def measurement(accuracy, agreement):
        return Measurement(
            size_bytes=1, params=1, nonzero_params=1, macs=None, latency_ms=Latency(b1=None, bN=None, batch=8),
            throughput_per_s=None, peak_mem_bytes=None, accuracy=accuracy, agreement=agreement,
            agreement_metric="top1", cosine_similarity=None, device="cpu", runtime="eager",
        )

    base = measurement(None, None)
    fast = Ratios(size_ratio=3.0, speedup_b1=2.0, speedup_bN=2.0)

    def entry(step, accuracy, agreement, baseline=base):
        out = StepOutput(path=Path("a.pt2"), format="pt2")
        return artifact_entry(step, Measured(out, measurement(accuracy, agreement), fast), baseline, 8)

    plain, strict = quantize_step("fp16"), quantize_step("int8_dynamic", max_accuracy_drop=0.01)
    assert entry(plain, None, 0.95).verdict == "faster_and_smaller"  # 5 points: within the default 10
    lost = entry(plain, None, 0.0)
    assert lost.verdict == "quality_lost"
    assert lost.verdict_reason.startswith("quality lost: top1 0.000") and "100.0 points" in lost.verdict_reason
    assert "2.00x" in lost.verdict_reason  # the speed figures are still there, after the reason
    assert entry(strict, None, 0.97).verdict == "quality_lost"  # the step's own budget is the limit
    # with labels, accuracy is what counts: 0.90 against 0.92 is 2 points, whatever the agreement
    labelled = measurement(0.92, None)
    assert entry(plain, 0.90, 0.5, labelled).verdict == "faster_and_smaller"
    assert entry(plain, 0.70, 0.99, labelled).verdict == "quality_lost"
