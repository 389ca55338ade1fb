"""Distillation: the losses by hand, students from anywhere, unlabeled data, resume from a checkpoint,
ONNX teachers, and students that cannot match the teacher refused before training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.engine import run_recipe
from workers.compression import RecipeError, load_model
from workers.compression.contract.inspection import ModelInfo
from workers.compression.contract.recipe import check_recipe, parse_recipe
from workers.compression.contract.recipe.distill import check_reference
from workers.compression.distillation.losses import distillation_loss, soft_kd
from workers.compression.formats import InputSpec, save_model

from .conftest import export_pt2
from .digits import DigitsCNN, DigitsMLP


def distill(**step):
    return {"steps": [{"method": "distill", **step}]}


@pytest.fixture(scope="module")
def small_student(tmp_path_factory):
    """An untrained narrow CNN, as a user would upload a student architecture."""
    torch.manual_seed(1)
    return export_pt2(DigitsCNN(width=4).eval(), tmp_path_factory.mktemp("s") / "student.pt2", torch.zeros(2, 1, 8, 8))


def test_soft_kd_matches_a_hand_computed_value():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    temperature = 2.0
    expected = 0.0
    for si, ti in zip(s.tolist(), t.tolist()):
        pt = [math.exp(v / temperature) for v in ti]
        pt = [p / sum(pt) for p in pt]
        ps = [math.exp(v / temperature) for v in si]
        ps = [p / sum(ps) for p in ps]
        expected += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    expected = expected / 2 * temperature**2
    assert soft_kd(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert soft_kd(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_temperature_and_alpha_act_as_they_should():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 3
    y = torch.randint(0, 10, (8,), generator=g)
    kd = soft_kd(s, t, 4.0)
    ce = F.cross_entropy(s, y)

    def loss(alpha, temperature=4.0, labels=y, kind="soft"):
        return distillation_loss(s, t, labels, kind=kind, temperature=temperature, alpha=alpha, output_loss="mse")

    assert loss(1.0).item() == pytest.approx(kd.item(), rel=1e-6)
    assert loss(0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert loss(0.3).item() == pytest.approx(0.3 * kd.item() + 0.7 * ce.item(), rel=1e-6)
    assert loss(0.3, labels=None).item() == pytest.approx(kd.item(), rel=1e-6)  # no labels: pure distillation
    # a higher temperature softens both distributions: their KL (before the T^2 scale) shrinks
    assert soft_kd(s, t, 8.0).item() / 64 < soft_kd(s, t, 2.0).item() / 4
    hard = loss(1.0, kind="hard")
    assert hard.item() == pytest.approx(F.cross_entropy(s, t.argmax(1)).item(), rel=1e-6)


def test_derived_student_is_narrower_trains_and_keeps_accuracy(cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        distill(student={"derive": {"width": 0.5}}, epochs=4, compare_baseline=True),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    details = step["details"]
    assert details["student_params"] < 0.5 * details["teacher_params"]
    assert step["measurement"]["params"] < 0.5 * report["baseline"]["params"]
    assert step["measurement"]["macs"] < report["baseline"]["macs"]
    assert len(details["history"]) == 4 and details["validation_samples"] == 140
    assert step["measurement"]["accuracy"] > 0.9
    compared = details["compare_baseline"]
    assert compared["scored_on"] == "eval data" and 0 < compared["labels_only_accuracy"] <= 1
    assert compared["gain"] == pytest.approx(
        compared["distilled_accuracy"] - compared["labels_only_accuracy"], abs=1e-4
    )


def test_unlabelled_data_is_pure_distillation(cnn_pt2, digits_unlabelled_npz, small_student, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        distill(student={"model_id": "mdl_student"}, epochs=6, learning_rate=3e-3),
        data_path=digits_unlabelled_npz,
        models={"mdl_student": small_student},
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    assert step["measurement"]["accuracy"] is None
    assert step["measurement"]["agreement"] > 0.7, step["details"]["history"]
    losses = [h["loss"] for h in step["details"]["history"]]
    assert losses[-1] < losses[0]
    assert any("no labels" in n for n in step["notes"])
    assert report["eval_data"]["held_out_fraction"] == 0.2


def test_resume_continues_at_the_right_epoch_with_the_same_optimizer_state(cnn_pt2, digits_train_npz, tmp_path, quick):
    recipe = distill(student={"derive": {"width": 0.5}}, epochs=4, validation_split=0.1)

    def run(out, progress=None):
        return run_recipe(cnn_pt2, recipe, data_path=digits_train_npz, out_dir=out, settings=quick, progress=progress)

    class Died(Exception):
        pass

    def die_after_epoch_2(fraction, stage):
        if "epoch 2/4" in stage:
            raise Died

    with pytest.raises(Exception):  # noqa: B017 - the step fails however the pipeline wraps it
        run(tmp_path / "interrupted", die_after_epoch_2)
    saved = torch.load(tmp_path / "interrupted" / "checkpoints" / "step1_distill_kd.ckpt", weights_only=True)
    assert saved["epoch"] == 2

    stages = []
    resumed = run(tmp_path / "interrupted", lambda f, s: stages.append(s))
    assert any("resumed from epoch 2" in s for s in stages)
    trained = [s for s in stages if "distilling: epoch" in s]
    assert [s.split("epoch ")[1].split(":")[0] for s in trained] == ["3/4", "4/4"]
    assert resumed["steps"][0]["details"]["resumed_from_epoch"] == 2

    straight = run(tmp_path / "straight")
    a = torch.load(tmp_path / "interrupted" / "checkpoints" / "step1_distill_kd.ckpt", weights_only=True)
    b = torch.load(tmp_path / "straight" / "checkpoints" / "step1_distill_kd.ckpt", weights_only=True)
    for key in b["student"]:
        assert torch.allclose(a["student"][key].float(), b["student"][key].float(), atol=1e-6), key
    for ga, gb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.allclose(ga[k].float(), gb[k].float(), atol=1e-6) for k in gb)
    assert a["history"] == b["history"]
    assert resumed["steps"][0]["measurement"]["accuracy"] == straight["steps"][0]["measurement"]["accuracy"]


def test_onnx_teacher_with_an_uploaded_student(cnn, digits_train_npz, small_student, tmp_path, quick):
    teacher = save_model(cnn, InputSpec(shape=(None, 1, 8, 8)), "onnx", tmp_path / "teacher.onnx")
    report = run_recipe(
        teacher,
        distill(student={"model_id": "s"}, epochs=5, learning_rate=3e-3, features=[]),
        data_path=digits_train_npz,
        models={"s": small_student},
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    assert report["baseline"]["runtime"] == "onnxruntime" and step["format"] == "pt2"
    assert step["measurement"]["params"] < report["baseline"]["params"] / 4
    assert step["measurement"]["accuracy"] > 0.5
    assert load_model(tmp_path / "out" / step["artifact_id"]).module(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_feature_matching_trains_a_projection(cnn_pt2, digits_train_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        distill(
            student={"derive": {"width": 0.25}},
            epochs=2,
            loss="hard",
            features=[{"teacher": "features.3", "student": "features.3"}],
        ),
        data_path=digits_train_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    assert report["steps"][0]["measurement"]["accuracy"] > 0.5


def test_hugging_face_student_keeps_every_other_layer(tmp_path, quick):
    import shutil

    from .test_formats import _tiny_bert

    _tiny_bert(tmp_path / "bert")
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")
    np.savez(tmp_path / "tokens.npz", x=np.random.default_rng(0).integers(0, 100, (64, 64)))
    report = run_recipe(
        archive,
        distill(student={"derive": {"layers": 1}}, epochs=2),
        data_path=tmp_path / "tokens.npz",
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    assert step["measurement"]["params"] < report["baseline"]["params"]
    assert "layers [0] of 2" in step["notes"][0]


def test_a_student_that_cannot_match_the_teacher_is_refused_before_training(cnn_pt2, digits_train_npz, tmp_path, quick):
    wrong = DigitsMLP()
    wrong.net[-1] = torch.nn.Linear(512, 5)
    path = export_pt2(wrong.eval(), tmp_path / "five.pt2", torch.zeros(2, 1, 8, 8))
    stages = []
    with pytest.raises(Exception, match="does not match the teacher"):
        run_recipe(
            cnn_pt2,
            distill(student={"model_id": "five"}),
            data_path=digits_train_npz,
            models={"five": path},
            out_dir=tmp_path,
            settings=quick,
            progress=lambda f, s: stages.append(s),
        )
    assert not any("epoch" in s for s in stages)
    # the service refuses it at submission from what inspection recorded
    common = {"format": "pt2", "runtime": "eager", "size_bytes": 1, "params": 1, "nonzero_params": 1,
              "input": {"shape": [None, 1, 8, 8], "dtype": "float32"}}
    teacher = ModelInfo(**common, output_shape=[None, 10])
    student = ModelInfo(**common, output_shape=[None, 5])
    step = parse_recipe(distill(student={"model_id": "five"})).steps[0]
    assert "does not match" in check_reference(step, teacher, student)
    assert check_reference(step, teacher, teacher) is None


@pytest.mark.parametrize(
    ("step", "has_labels", "message"),
    [
        ({"student": {}}, True, "one of arch, model_id or derive"),
        ({"student": {"arch": "resnet18", "derive": {"width": 0.5}}}, True, "one of arch, model_id or derive"),
        ({"student": {"derive": {"width": 1.5}}}, True, "less than 1"),
        ({"student": {"derive": {}}}, True, "derive takes one of"),
        ({"student": {"arch": "resnet18"}, "temperature": 0}, True, "greater than 0"),
        ({"student": {"arch": "resnet18"}, "compare_baseline": True}, False, "needs labels"),
    ],
)
def test_bad_distillation_parameters(step, has_labels, message):
    with pytest.raises(RecipeError, match=message):
        check_recipe(parse_recipe(distill(**step)), "pt2", has_data=True, has_labels=has_labels)


def test_formats_per_student_source():
    with pytest.raises(RecipeError, match="does not accept torchscript"):
        check_recipe(parse_recipe(distill(student={"derive": {"width": 0.5}})), "torchscript")
    # an ONNX teacher is narrowed as PyTorch layers (test_prune.py::test_a_student_is_derived_from_an_onnx_teacher)
    assert check_recipe(parse_recipe(distill(student={"derive": {"width": 0.5}})), "onnx") == ["onnx"]
    with pytest.raises(RecipeError, match="does not accept pt2"):
        check_recipe(parse_recipe(distill(student={"derive": {"layers": 2}})), "pt2")
    assert check_recipe(parse_recipe(distill(student={"arch": "resnet18"})), "onnx") == ["pt2"]
    with pytest.raises(RecipeError, match="needs a dataset"):
        check_recipe(parse_recipe(distill(student={"arch": "resnet18"})), "pt2", has_data=False)


def _hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in module.modules())


def test_feature_matching_that_cannot_start_leaves_no_hook_behind():
    """A bad layer name, or a first pass that fails, leaves both models as they were: no forward hook stays."""
    from workers.compression.distillation.trainer import FeatureMatching, FeatureTaps

    student, teacher = DigitsCNN(), DigitsCNN()
    with pytest.raises(RecipeError, match="no layer named 'nope'"):
        FeatureTaps(student, ["features.0", "nope"])
    assert _hooks(student) == 0
    step = parse_recipe(
        {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}},
                    "features": [{"student": "features.0", "teacher": "features.0"}]}]}
    ).steps[0]
    with pytest.raises(RuntimeError):  # the sample has the wrong shape: the shape pass fails
        FeatureMatching(student, teacher, step, torch.zeros(2, 3, 8, 8), "cpu")
    assert _hooks(student) == 0 and _hooks(teacher) == 0
