"""First methods on the digits models: outputs run, accuracy holds, artifacts shrink by the expected factor."""

from __future__ import annotations

import pytest
import torch

from tests.engine import run_recipe
from workers.compression import ModelFormat, load_model
from workers.compression.formats import InputSpec, save_model
from workers.compression.measure.metrics import weight_tensors

from .conftest import export_pt2
from .digits import DigitsMLP, accuracy, train


def quantize(scheme):
    return {"steps": [{"method": "quantize", "scheme": scheme}]}


@pytest.fixture(scope="module")
def wide_mlp_pt2(digits, tmp_path_factory):
    x, y, _, _ = digits
    net = train(DigitsMLP(hidden=1024), x, y, epochs=4)
    return export_pt2(net, tmp_path_factory.mktemp("wide") / "mlp.pt2", torch.zeros(2, 1, 8, 8)), net


@pytest.mark.parametrize(("scheme", "tolerance"), [("fp16", 0.01), ("bf16", 0.03), ("int8_dynamic", 0.02)])
def test_cnn_keeps_its_accuracy(cnn_pt2, digits_npz, tmp_path, quick, scheme, tolerance):
    report = run_recipe(cnn_pt2, quantize(scheme), data_path=digits_npz, out_dir=tmp_path, settings=quick)
    base, step = report["baseline"], report["steps"][0]
    assert base["accuracy"] > 0.85
    assert abs(report["final"]["accuracy_delta"]) <= tolerance
    assert step["measurement"]["agreement"] >= 0.95
    assert step["format"] == "pt2" and (tmp_path / step["artifact_id"]).is_file()
    assert (tmp_path / "report.json").is_file()


def test_fp16_halves_the_artifact(wide_mlp_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(wide_mlp_pt2[0], quantize("fp16"), data_path=digits_npz, out_dir=tmp_path, settings=quick)
    assert 1.85 <= report["final"]["size_ratio"] <= 2.05
    artifact = load_model(tmp_path / report["final"]["artifact_id"])
    dtypes = {t.dtype for t in weight_tensors(artifact.module)}
    assert dtypes == {torch.float16}


def test_int8_dynamic_shrinks_linear_weights_about_4x_and_keeps_no_fp32_copies(
    wide_mlp_pt2, digits, digits_npz, tmp_path, quick
):
    path, net = wide_mlp_pt2
    _, _, xt, yt = digits
    report = run_recipe(path, quantize("int8_dynamic"), data_path=digits_npz, out_dir=tmp_path, settings=quick)
    assert report["final"]["size_ratio"] >= 3.5, report["final"]
    artifact = load_model(tmp_path / report["final"]["artifact_id"])
    tensors = weight_tensors(artifact.module)
    int8 = [t for t in tensors if t.dtype == torch.int8]
    floats = [t for t in tensors if t.dtype.is_floating_point]
    assert len(int8) == 3 and all(t.ndim == 2 for t in int8)
    assert all(t.ndim == 1 for t in floats), "only biases may stay in floating point"
    assert abs(report["final"]["accuracy_delta"]) <= 0.02
    assert report["baseline"]["accuracy"] == pytest.approx(accuracy(net, xt, yt), abs=1e-6)


def test_int8_dynamic_on_onnx_uses_onnxruntime(mlp, digits_npz, tmp_path, quick):
    onnx_path = save_model(mlp, InputSpec((None, 1, 8, 8)), ModelFormat.ONNX, tmp_path / "mlp.onnx")
    report = run_recipe(
        onnx_path, quantize("int8_dynamic"), data_path=digits_npz, out_dir=tmp_path / "out", settings=quick
    )
    step = report["steps"][0]
    assert step["format"] == "onnx" and step["measurement"]["runtime"] == "onnxruntime"
    assert report["final"]["size_ratio"] >= 3.0
    assert step["measurement"]["agreement"] >= 0.95


def test_fp16_on_torchscript_stays_torchscript(cnn, digits_npz, tmp_path, quick):
    path = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.trace(cnn, torch.zeros(2, 1, 8, 8)), str(path))
    report = run_recipe(path, quantize("fp16"), data_path=digits_npz, out_dir=tmp_path / "out", settings=quick)
    assert report["steps"][0]["format"] == "torchscript"
    assert report["steps"][0]["measurement"]["agreement"] >= 0.98
    assert report["final"]["size_ratio"] > 1.5


@pytest.mark.parametrize("target", ["pt2", "onnx", "torchscript"])
def test_export_keeps_outputs(cnn_pt2, digits_npz, tmp_path, quick, target):
    report = run_recipe(
        cnn_pt2,
        {"steps": [{"method": "export", "format": target}]},
        data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    assert step["format"] == target
    assert step["measurement"]["agreement"] == 1.0
    assert report["final"]["accuracy_delta"] == pytest.approx(0.0, abs=1e-9)


def test_pipeline_of_two_steps(cnn_pt2, digits_npz, tmp_path, quick):
    recipe = {"steps": [{"method": "quantize", "scheme": "fp16"}, {"method": "export", "format": "onnx"}]}
    report = run_recipe(cnn_pt2, recipe, data_path=digits_npz, out_dir=tmp_path, settings=quick)
    assert [s["format"] for s in report["steps"]] == ["pt2", "onnx"]
    assert report["final"]["artifact_id"].endswith(".onnx")
    assert report["steps"][1]["measurement"]["agreement"] >= 0.98


def test_huggingface_model_quantized_to_an_exported_program(tmp_path, quick):
    import shutil

    import numpy as np

    from .test_formats import _tiny_bert

    _tiny_bert(tmp_path / "bert")
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")
    ids = tmp_path / "ids.npz"
    np.savez(ids, x=np.random.default_rng(0).integers(0, 100, (64, 16)))
    report = run_recipe(
        archive,
        quantize("int8_dynamic"),
        data_path=ids,
        out_dir=tmp_path / "out",
        settings=quick,
        load={"input_shape": [1, 16]},
    )
    step = report["steps"][0]
    assert step["format"] == "pt2"
    assert step["measurement"]["agreement"] >= 0.9 and step["measurement"]["cosine_similarity"] > 0.98


def test_int8_dynamic_on_a_torchvision_resnet_with_a_reused_relu(tmp_path, quick):
    """torchvision's ResNet calls one ReLU module several times; the x86 quantizer needs each call apart."""
    import torchvision

    net = torchvision.models.resnet18(num_classes=10).eval()
    path = export_pt2(net, tmp_path / "r18.pt2", torch.zeros(2, 3, 32, 32))
    report = run_recipe(path, quantize("int8_dynamic"), out_dir=tmp_path / "out", settings=quick)
    assert report["final"]["size_ratio"] > 3.5
    assert report["steps"][0]["measurement"]["cosine_similarity"] > 0.98
    assert report["steps"][0]["details"]["int8_weights"] == {"conv": 20, "linear": 1}


def test_safetensors_architecture_to_bf16(tmp_path, quick):
    import torchvision

    from workers.compression.formats import save_weights

    net = torchvision.models.squeezenet1_1(num_classes=10).eval()
    path = save_weights(net, tmp_path / "w.safetensors", arch="squeezenet1_1", arch_kwargs={"num_classes": 10})
    report = run_recipe(
        path, quantize("bf16"), out_dir=tmp_path / "out", settings=quick, load={"input_shape": [1, 3, 32, 32]}
    )
    # the baseline is bare weights, the artifact a whole program (graph + weights): a bit under 2x
    assert report["steps"][0]["format"] == "pt2" and report["final"]["size_ratio"] > 1.6
    assert report["steps"][0]["measurement"]["cosine_similarity"] > 0.99


def test_progress_reports_stages_in_order(cnn_pt2, digits_npz, tmp_path, quick):
    seen = []
    run_recipe(
        cnn_pt2,
        quantize("fp16"),
        data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
        progress=lambda fraction, stage: seen.append((fraction, stage)),
    )
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and all(0 <= f <= 1 for f in fractions)
    stages = [s for _, s in seen]
    assert stages[0] == "loading model" and "step 1/1: quantize" in stages and stages[-1] == "done"
    assert any(s.startswith("measuring") for s in stages)
