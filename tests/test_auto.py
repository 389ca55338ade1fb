"""Pipelines and `auto` in the engine: every step's artifact measured and kept, a failing later step keeps
the earlier ones, orders that cannot work refused up front, and the budgeted search (front, recommendation
under the accuracy budget, a tiny time budget still returning a result)."""

from __future__ import annotations

import pytest
import torch

from tests.engine import run_recipe
from workers.compression import load_model
from workers.compression.contract.errors import RecipeError, StepFailedError
from workers.compression.contract.recipe import check_recipe, parse_recipe
from workers.compression.formats import ModelFormat
from workers.compression.search.objective import Point, pareto_front, recommend

from .test_quantize_schemes import sensitive_mlp_pt2  # noqa: F401  (fixture)

PRUNE = {"method": "prune", "kind": "structured", "sparsity": 0.5, "finetune_epochs": 1}


def test_a_failing_later_step_keeps_the_earlier_artifacts_measured(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    # a ResNet-18 student expects 3-channel images: distilling the 1-channel digits model into it fails at
    # run time, after the pruning step has produced its model
    recipe = {"steps": [PRUNE, {"method": "distill", "student": {"arch": "resnet18"}, "epochs": 1}]}
    with pytest.raises(StepFailedError, match=r"step 2 \(distill\) failed: .*the artifact of step 1 is kept") as e:
        run_recipe(
            cnn_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
        )
    report = e.value.report.model_dump(mode="json")
    assert report["failed"] == e.value.message
    [pruned] = report["steps"]
    assert pruned["method"] == "prune" and (tmp_path / pruned["artifact_id"]).exists()
    assert pruned["measurement"]["macs"] < report["baseline"]["macs"]
    assert report["final"]["artifact_id"] == pruned["artifact_id"]


def test_a_failing_first_step_has_nothing_to_keep(cnn_pt2, digits_train_npz, tmp_path, quick):
    recipe = {"steps": [{"method": "distill", "student": {"arch": "resnet18"}, "epochs": 1}, PRUNE]}
    with pytest.raises(StepFailedError, match=r"step 1 \(distill\) failed") as e:
        run_recipe(cnn_pt2, recipe, data_path=digits_train_npz, out_dir=tmp_path, settings=quick)
    assert e.value.report is None


@pytest.mark.parametrize(
    "steps, reason",
    [
        ([{"method": "quantize", "scheme": "int8_static"}, PRUNE], "prune before quantizing"),
        (
            [
                {"method": "quantize", "scheme": "int8_dynamic"},
                {"method": "distill", "student": {"derive": {"width": 0.5}}},
            ],
            "distil first, then quantize",
        ),
        ([PRUNE, {"method": "auto"}], "give it as the only step"),
        ([{"method": "auto"}, {"method": "export", "format": "onnx"}], "auto is a whole search and comes alone"),
    ],
)
def test_orders_that_cannot_work_are_refused_with_the_reason(steps, reason):
    with pytest.raises(RecipeError, match=reason):
        check_recipe(parse_recipe({"steps": steps}), ModelFormat.PT2, has_data=True)


def test_auto_needs_a_dataset():
    with pytest.raises(RecipeError, match="auto calibrates, trains and scores candidates on data"):
        check_recipe(parse_recipe({"steps": [{"method": "auto"}]}), ModelFormat.PT2, has_data=False)


def test_pareto_front_and_recommendation():
    a = Point("a", 0.000, 1.0, 1.0)
    b = Point("b", 0.005, 3.0, 4.0)
    c = Point("c", 0.004, 2.0, 3.0)  # not dominated by b: more accurate
    d = Point("d", 0.006, 2.5, 3.5)  # dominated by b
    e = Point("e", 0.050, 6.0, 4.0)  # fastest, but over a 1-point budget
    assert {p.key for p in pareto_front([a, b, c, d, e])} == {"a", "b", "c", "e"}
    rec = recommend([a, b, c, d, e], "latency", 0.01)
    assert rec.point is b and rec.within_budget
    closest = recommend([d, e], "latency", 0.001)
    assert closest.point is d and not closest.within_budget and "closest" in closest.reason


def test_auto_does_not_recommend_a_candidate_over_the_accuracy_budget(
    sensitive_mlp_pt2,  # noqa: F811
    digits_train_npz,
    digits_npz,
    tmp_path,
    quick,
):
    recipe = {
        # onnxruntime alone: the rule under test is the same on every runtime, and its candidates build in seconds
        "steps": [{"method": "auto", "max_accuracy_drop": 0.01, "budget_minutes": 3, "techniques": ["quantize"],
                   "runtimes": ["onnxruntime"]}]
    }
    report = run_recipe(
        sensitive_mlp_pt2,
        recipe,
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    search = step["search"]
    measured = [a for c in search["candidates"] for a in c.get("artifacts", [])]
    # the model is made so that plain int8 loses accuracy: the search must have seen such a candidate ...
    assert any(a["accuracy_drop"] > 0.02 for a in measured), measured
    # ... and recommends one that keeps the budget on the held-out evaluation data
    assert step["within_budget"] and report["final"]["within_budget"]
    assert report["final"]["accuracy_delta"] >= -0.01, report["final"]
    assert step["recommended"] == report["final"]["artifact_id"]
    [recommended] = [m for m in step["front"] if m["recommended"]]
    assert recommended["artifact_id"] == step["artifact_id"]
    # every candidate is kept with its figures; only the front's files remain on disk
    assert len(measured) >= 3 and all(a["measurement"]["size_bytes"] > 0 for a in measured)
    on_front = {a["artifact"] for a in measured if a["on_front"]}
    assert on_front == {m["artifact_id"] for m in step["front"]}
    for member in step["front"]:
        assert (tmp_path / member["artifact_id"]).exists()
        assert member["details"]["recipe"][-1]["method"] in ("quantize", "export")
    assert not any((tmp_path / a["artifact"]).exists() for a in measured if a["artifact"] and not a["on_front"])


def test_a_tiny_time_budget_still_returns_a_result(cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick):
    recipe = {"steps": [{"method": "auto", "budget_minutes": 0.01, "objective": "size"}]}
    report = run_recipe(
        cnn_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    search = step["search"]
    statuses = [c["status"] for c in search["candidates"]]
    assert statuses[0] == "measured" and "skipped" in statuses, statuses
    assert search["stopped"] == "budget"
    assert any("the time budget (0.01 min) ran out" in n for n in step["notes"]), step["notes"]
    model = load_model(tmp_path / report["final"]["artifact_id"])
    with torch.inference_mode():
        assert model.module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert report["final"]["size_ratio"] > 1.5  # the first candidate for size is 4-bit weights


def test_auto_on_an_onnx_model_searches_onnxruntime_int8(mlp, digits_train_npz, digits_npz, tmp_path, quick):
    from workers.compression.formats import InputSpec, save_model

    onnx_path = save_model(mlp, InputSpec((None, 1, 8, 8)), ModelFormat.ONNX, tmp_path / "mlp.onnx")
    recipe = {"steps": [{"method": "auto", "budget_minutes": 0.5}]}
    report = run_recipe(
        onnx_path,
        recipe,
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    labels = [c["label"] for c in step["search"]["candidates"]]
    assert labels == ["int8_static (4-batch calibration)", "int8_dynamic"], labels
    # an ONNX upload is never compiled by torch: its int8 runs on onnxruntime, and on OpenVINO, which reads ONNX
    assert {m["measurement"]["runtime"] for m in step["front"]} <= {"onnxruntime", "openvino"}
    assert step["within_budget"] and report["final"]["size_ratio"] > 3.0
    assert step["front"][0]["details"]["recipe"][0]["method"] == "quantize"


def test_without_labels_a_one_sided_original_is_judged_with_the_output_cosine(digits, tmp_path, quick):
    import numpy as np

    from .conftest import export_pt2
    from .digits import DigitsMLP

    torch.manual_seed(0)
    net = DigitsMLP(hidden=64).eval()
    with torch.no_grad():
        net.net[-1].bias[3] += 100.0  # predicts class 3 for every input: top-1 agreement alone says nothing
    path = export_pt2(net, tmp_path / "one_sided.pt2", torch.zeros(2, 1, 8, 8))
    np.savez(tmp_path / "x.npz", x=digits[0])
    recipe = {"steps": [{"method": "auto", "budget_minutes": 0.01}]}
    report = run_recipe(path, recipe, data_path=tmp_path / "x.npz", out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]
    assert step["search"]["quality"] == "agreement"
    assert any("predicts one class for 100%" in n and "cosine" in n for n in step["notes"]), step["notes"]
    [measured] = [a for c in step["search"]["candidates"] for a in c.get("artifacts", [])][:1]
    m = measured["measurement"]
    assert m["agreement"] <= m["cosine_similarity"] + 1e-9 and "cosine" in m["agreement_metric"]
    # the drop the search ranked by is the one the report's verdict reads
    assert measured["accuracy_drop"] == pytest.approx(1 - m["agreement"])


def test_a_two_class_output_is_judged_by_agreement_and_a_member_over_budget_is_never_a_gain():
    """The hold-out face CNN: `auto` scored "prune 75 %" by cosine (1.67 points lost) and recommended it within
    a 2-point budget, while the report's verdict read top-1 0.863, a drop of 13.7 points. One rule now: a
    2-class output is scored by top-1 agreement everywhere, and a front member over the budget is
    quality_lost, never recommended as within it."""
    from pathlib import Path

    from workers.compression.contract.measure import Latency, Measurement, Ratios
    from workers.compression.contract.recipe.auto import AutoStep
    from workers.compression.measure.quality import score
    from workers.compression.results import Measured
    from workers.compression.search.reporter import front_entry
    from workers.compression.step import StepOutput

    torch.manual_seed(0)
    original = torch.randn(400, 2) * 3
    pruned = original.clone()
    flipped = original[:, 0].sub(original[:, 1]).abs() < 1.0  # near the boundary: a small change flips them
    pruned[flipped] = pruned[flipped].flip(1)
    q = score([pruned], [original])
    assert q.metric == "top1" and q.agreement == pytest.approx(1 - flipped.float().mean().item())
    assert q.cosine > q.agreement + 0.05  # what the search used to read: it looked far better

    def measured(agreement, cosine, speedup):
        m = Measurement(
            size_bytes=1, params=1, nonzero_params=1, macs=None, latency_ms=Latency(b1=None, bN=None, batch=8),
            throughput_per_s=None, peak_mem_bytes=None, accuracy=None, agreement=agreement,
            agreement_metric="top1", cosine_similarity=cosine, device="cpu", runtime="onnxruntime",
        )
        return Measured(StepOutput(Path(f"{agreement}.onnx"), "onnx"), m, Ratios(size_ratio=4.0, speedup_b1=speedup,
                                                                               speedup_bN=speedup))

    base = measured(None, None, 1.0).measurement
    auto = AutoStep(max_accuracy_drop=0.02)
    pruned75, int8 = measured(0.863, 0.983, 3.0), measured(0.995, 0.999, 1.6)
    entry = front_entry(auto, base, [pruned75, int8], 8)
    assert entry.within_budget and entry.recommended == entry.artifact_id
    by_speed = {round(f.speedup_b1, 1): f for f in entry.front}
    assert by_speed[1.6].recommended and by_speed[1.6].verdict == "faster_and_smaller"
    assert by_speed[3.0].verdict == "quality_lost" and "13.7 points" in by_speed[3.0].verdict_reason
    alone = front_entry(auto, base, [pruned75], 8)
    assert not alone.within_budget and alone.verdict == "quality_lost"


def test_outputs_that_overflow_or_change_layout_are_scored_as_they_are():
    """An fp16 overflow's NaN rows disagree (argmax would put them on class 0, the one-sided original's class,
    and min() would skip a NaN cosine); the same values in another layout are scored, not zeroed."""
    from workers.compression.measure.quality import score

    original = torch.zeros(100, 3)
    original[:, 0] = 5.0 + torch.rand(100)  # one-sided: class 0 everywhere
    broken = original.clone()
    broken[:40] = float("nan")
    q = score([broken], [original])
    assert q.agreement == pytest.approx(0.6) and q.cosine == pytest.approx(0.6)
    reshaped = score([original.unsqueeze(1)], [original])
    assert reshaped.agreement == pytest.approx(1.0)
    assert score([torch.zeros(100, 4)], [original]).agreement == 0.0


def test_an_onnx_upload_is_not_offered_quantization_aware_training():
    # QAT trains a PyTorch graph: on an ONNX upload the search listed it as a failed candidate (CenterFace)
    from workers.compression.contract.recipe.auto import AutoStep
    from workers.compression.contract.recipe.quantize import quantize_step
    from workers.compression.search import space

    auto, screened = AutoStep(method="auto"), quantize_step("int8_static", runtime="auto", calibration_batches=4)
    torch_labels = [c.label for c in space.guarded_quantization(auto, screened, 0.01)]
    onnx_labels = [c.label for c in space.guarded_quantization(auto, screened, 0.01, onnx_model=True)]
    assert "int8_qat (2 epochs)" in torch_labels and "int8_qat (2 epochs)" not in onnx_labels
    assert onnx_labels == ["int8_static, full calibration, sensitive layers kept in float"]
