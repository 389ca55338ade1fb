"""OpenVINO as a third runtime: IR artifacts a user loads with OpenVINO alone, int8 through NNCF on the job's
calibration data, every runtime measured in one run with the recommendation chosen by the batch size the
step optimises for, and the field's one-call recipes (peers) measured beside Squeeze's own."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch

from tests.engine import run_recipe
from workers.compression import InputSpec, load_model, save_model


def read_as_a_user_would(path):
    """README "OpenVINO artifacts": OpenVINO alone, from the one file."""
    import openvino as ov

    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["model.bin", "model.xml"]
        model = ov.Core().read_model(z.read("model.xml").decode(), ov.Tensor(np.frombuffer(z.read("model.bin"), np.uint8)))
    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def test_export_to_openvino_gives_one_file_openvino_reads(cnn_pt2, digits, tmp_path, quick):
    report = run_recipe(cnn_pt2, {"steps": [{"method": "export", "format": "openvino"}]}, out_dir=tmp_path, settings=quick)
    step = report["steps"][0]
    assert step["format"] == "openvino" and step["measurement"]["runtime"] == "openvino"
    assert step["artifact_id"].endswith(".openvino.zip")
    compiled = read_as_a_user_would(tmp_path / step["artifact_id"])
    _, _, x, _ = digits
    got = compiled(x[:8])[0]
    want = load_model(cnn_pt2).module(torch.from_numpy(x[:8])).detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_int8_on_every_runtime_is_measured_and_the_fastest_within_budget_recommended(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_static", "objective": "latency"}]}
    report = run_recipe(
        cnn_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    runtimes = {r["measurement"]["runtime"]: r for r in step["runtimes"]}
    assert set(runtimes) == {"inductor", "onnxruntime", "openvino"}, step["notes"]
    ov = runtimes["openvino"]
    assert ov["format"] == "openvino" and ov["measurement"]["accuracy"] > 0.9, ov
    assert "NNCF" in " ".join(ov["notes"])
    within = [r for r in step["runtimes"] if report["baseline"]["accuracy"] - r["measurement"]["accuracy"] <= 0.01]
    fastest = max(within, key=lambda r: r["speedup_b1"])  # objective latency: batch 1 decides
    assert step["recommended"] == fastest["artifact_id"] == step["artifact_id"]
    assert any("the fastest at batch 1" in n for n in step["notes"])
    read_as_a_user_would(tmp_path / ov["artifact_id"])
    env = report["baseline"]["env"]
    assert isinstance(env["cpu_features"], list) and "openvino" in env["versions"]


def test_the_peers_are_measured_beside_and_compared(cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick):
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_static", "runtime": "openvino", "compare_peers": True}]}
    report = run_recipe(
        cnn_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    peers = {p["peer"]: p for p in step["peers"]}
    assert set(peers) == {"onnxruntime quantize_static", "NNCF quantize on OpenVINO"}
    assert peers["onnxruntime quantize_static"]["measurement"]["runtime"] == "onnxruntime"
    assert peers["NNCF quantize on OpenVINO"]["format"] == "openvino"
    comparison = step["against_peers"]
    assert comparison["best_peer"] in peers and comparison["peer_artifact_id"] in {p["artifact_id"] for p in step["peers"]}
    best = peers[comparison["best_peer"]]
    assert comparison["ratio_bN"] == pytest.approx(step["speedup_bN"] / best["speedup_bN"])
    assert report["final"]["against_peers"] == comparison
    assert comparison["summary"] in step["notes"]
    assert step["artifact_id"] not in {p["artifact_id"] for p in step["peers"]}  # a peer is never recommended


def test_an_onnx_model_is_quantized_on_onnxruntime_and_openvino(cnn, digits_train_npz, tmp_path, quick):
    onnx_path = save_model(cnn, InputSpec(shape=(None, 1, 8, 8)), "onnx", tmp_path / "cnn.onnx")
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_static"}]}
    report = run_recipe(onnx_path, recipe, data_path=digits_train_npz, out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]
    assert {r["measurement"]["runtime"] for r in step["runtimes"]} == {"onnxruntime", "openvino"}
    assert all(r["measurement"]["agreement"] > 0.95 for r in step["runtimes"])
