"""Every quantization scheme on the digits CNN and a small transformer encoder: runs, shrinks by the
expected factor, keeps accuracy within a stated tolerance; int8 runtimes measured side by side; the
accuracy guard; packed low-bit weights."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from tests.engine import run_recipe
from workers.compression import ModelFormat, StepFailedError, load_model
from workers.compression.contract.recipe.quantize import RECOMMEND_BUDGET
from workers.compression.formats import InputSpec, save_model
from workers.compression.formats.packed import pack_bits, unpack_bits
from workers.compression.measure.metrics import weight_tensors
from workers.compression.quantization.packed import IntWeight, SignWeight, sign_codes

from .conftest import export_pt2
from .digits import DigitsEncoder, accuracy, train


def quantize(scheme, **options):
    return {"steps": [{"method": "quantize", "scheme": scheme, **options}]}


@pytest.fixture(scope="module")
def encoder(digits, tmp_path_factory):
    x, y, _, _ = digits
    net = train(DigitsEncoder(), x, y, epochs=15)
    return net, export_pt2(net, tmp_path_factory.mktemp("encoder") / "encoder.pt2", torch.zeros(2, 1, 8, 8))


def int8_initializers(path) -> int:
    model = onnx.load(str(path))
    return sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) > 1)


# ---------------------------------------------------------------- int8 static: runtimes side by side


# (every runtime measured side by side in one run, and the recommendation: tests/test_openvino.py
# test_int8_on_every_runtime_is_measured_and_the_fastest_within_budget_recommended)


def test_int8_static_on_onnx_from_the_torchscript_exporter(cnn, digits_train_npz, digits_npz, tmp_path, quick):
    # the legacy exporter names nodes and weights its own way ("onnx::Conv_12"), not as this project exports
    path = tmp_path / "legacy.onnx"
    torch.onnx.export(
        cnn, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
    )
    for scheme in ("int8_static", "int8_dynamic"):
        report = run_recipe(
            path,
            # int8_static would also run on OpenVINO (and be recommended where it is faster): not this test's
            quantize(scheme, **({"runtime": "onnxruntime"} if scheme == "int8_static" else {})),
            data_path=digits_train_npz,
            eval_data_path=digits_npz,
            out_dir=tmp_path / scheme,
            settings=quick,
        )
        step = report["steps"][0]
        assert step["format"] == "onnx" and step["measurement"]["runtime"] == "onnxruntime"
        assert report["final"]["accuracy_delta"] >= -0.01
        assert int8_initializers(tmp_path / scheme / step["artifact_id"]) == (4 if scheme == "int8_static" else 2)


def test_onnx_layers_without_names_are_named_before_quantizing(cnn, digits_train_npz, digits_npz, tmp_path, quick):
    # CenterFace's exporter names no node and no weight after its layer: the guard knew one layer, '', and
    # keeping it in float excluded every unnamed node, so "int8" quantized nothing (size ratio 1.00)
    from workers.compression.quantization.onnx_int8 import WEIGHTLESS_OPS, onnx_layers, preprocess

    path = tmp_path / "unnamed.onnx"
    torch.onnx.export(
        cnn, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "n"}}
    )
    model = onnx.load(str(path))
    renames = {t.name: f"{i}" for i, t in enumerate(model.graph.initializer)}
    for t in model.graph.initializer:
        t.name = renames[t.name]
    for node in model.graph.node:
        node.name = ""
        node.input[:] = [renames.get(i, i) for i in node.input]
    onnx.save(model, str(path))
    assert len(onnx_layers(preprocess(path, tmp_path / "pre.onnx"))) == 4
    report = run_recipe(
        path,
        quantize("int8_static", max_accuracy_drop=1e-6, runtime="onnxruntime"),  # nothing meets it: layers kept
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    kept = [n for n in step["details"]["layers_full_precision"] if n != WEIGHTLESS_OPS]
    assert "" not in kept and len(kept) < 4, kept
    assert int8_initializers(tmp_path / "out" / step["artifact_id"]) == 4 - len(kept)


def test_runtime_onnxruntime_alone_exports_then_quantizes(cnn_pt2, digits_train_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        quantize("int8_static", runtime="onnxruntime"),
        data_path=digits_train_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    assert step["format"] == "onnx" and "runtimes" not in step
    assert step["measurement"]["agreement"] >= 0.97


# ---------------------------------------------------------------- packed weights


def test_binary_and_ternary_packing_round_trips_bit_exact():
    torch.manual_seed(0)
    w = torch.randn(24, 3, 3, 3)
    mask = torch.rand(1001) > 0.5
    assert torch.equal(unpack_bits(pack_bits(mask), 1001), mask)
    per_bit_plane = (w.numel() + 7) // 8
    for levels, planes in ((2, 1), (3, 2)):
        codes, scale = sign_codes(w, levels)
        packed = SignWeight(w, levels)
        assert torch.equal(packed(), (codes * scale).view(w.shape))  # exact: same codes, same fp32 scale
        assert set(codes.unique().tolist()) <= ({-1.0, 1.0} if levels == 2 else {-1.0, 0.0, 1.0})
        code_bytes = sum(b.nbytes for name, b in packed.named_buffers() if not name.endswith("scale"))
        assert code_bytes == planes * per_bit_plane  # 1 bit (binary) / 2 bits (ternary) per weight


@pytest.mark.parametrize(("bits", "group"), [(8, None), (4, 9), (4, None)])
def test_int_weights_round_trip_their_codes_exactly(bits, group):
    torch.manual_seed(0)
    w = torch.randn(24, 3, 3, 3)
    q = IntWeight(w, bits, group)
    scale = q.qweight_scale  # (out, groups, 1)
    qmax = 2 ** (bits - 1) - 1
    codes = torch.round(w.reshape(24, scale.shape[1], -1) / scale).clamp(-qmax - 1, qmax)
    assert torch.equal(q(), (codes * scale).view(w.shape))
    assert q.qweight_codes.nbytes == w.numel() * bits // 8


@pytest.mark.parametrize(("scheme", "factor", "tolerance"), [("binary", 20, 0.03), ("ternary", 12, 0.02)])
def test_binary_and_ternary_keep_first_and_last_layers_and_shrink_the_rest(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick, scheme, factor, tolerance
):
    # a few straight-through epochs: without them the loss depends on the CNN's random initialisation
    report = run_recipe(
        cnn_pt2,
        quantize(scheme, finetune_epochs=3, learning_rate=1e-3),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    details = step["details"]
    assert details["layers_full_precision"] == ["features.0", "head.3"]
    assert details["quantized_weights"]["layers"] == 2
    assert details["quantized_weights"]["ratio"] >= factor  # 32x (binary) / 16x (ternary) less the scales
    assert report["final"]["accuracy_delta"] >= -tolerance
    assert report["final"]["size_ratio"] >= 3
    # a plain .pt2: any PyTorch loads and runs it without this project's code
    script = "import torch; m = torch.export.load(r'%s').module(); print(tuple(m(torch.zeros(3, 1, 8, 8)).shape))" % (
        tmp_path / step["artifact_id"]
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "(3, 10)"


def test_straight_through_finetuning_recovers_binary_accuracy(encoder, digits_train_npz, digits_npz, tmp_path, quick):
    _, path = encoder
    results = {}
    for epochs in (0, 8):
        report = run_recipe(
            path,
            quantize("binary", finetune_epochs=epochs, learning_rate=2e-3),
            data_path=digits_train_npz,
            eval_data_path=digits_npz,
            out_dir=tmp_path / str(epochs),
            settings=quick,
        )
        results[epochs] = report["final"]["accuracy_delta"]
    assert results[0] < -0.05, "binary weights should cost the encoder accuracy before fine-tuning"
    assert results[8] > results[0] + 0.05, results


@pytest.mark.parametrize(("scheme", "factor"), [("int8_weight_only", 3.8), ("int4_weight_only", 6.0)])
def test_weight_only_schemes_pack_every_layer(cnn_pt2, digits_npz, tmp_path, quick, scheme, factor):
    report = run_recipe(cnn_pt2, quantize(scheme), data_path=digits_npz, out_dir=tmp_path, settings=quick)
    step = report["steps"][0]
    assert step["details"]["quantized_weights"]["layers"] == 4
    assert step["details"]["quantized_weights"]["ratio"] >= factor
    assert report["final"]["accuracy_delta"] >= -0.01
    assert any("not faster" in n or "smaller, not faster" in n for n in step["notes"])


def test_int4_group_size_sets_one_scale_per_group(mlp_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        mlp_pt2, quantize("int4_weight_only", group_size=16), data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    program = torch.export.load(str(tmp_path / report["steps"][0]["artifact_id"]))
    scales = {k: v.shape for k, v in program.state_dict.items() if k.endswith("qweight_scale")}
    scales |= {k: v.shape for k, v in program.constants.items() if k.endswith("qweight_scale")}
    assert scales["net.1.weight.qweight_scale"] == (512, 4, 1)  # 64 inputs / 16
    assert scales["net.3.weight.qweight_scale"] == (512, 32, 1)
    assert report["final"]["accuracy_delta"] >= -0.02


# ---------------------------------------------------------------- QAT


def test_qat_without_labels_distils_from_the_fp32_model(cnn_pt2, digits_unlabelled_npz, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        quantize("int8_qat", finetune_epochs=1, calibration_batches=4),
        data_path=digits_unlabelled_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    assert step["measurement"]["runtime"] == "inductor"
    assert report["final"]["accuracy_delta"] >= -0.01
    program = load_model(tmp_path / step["artifact_id"])
    assert sum(t.dtype == torch.int8 for t in weight_tensors(program.module)) == 4
    # the batch norm is folded into its conv2d (torchao's folding, run only for the conv kinds the model has)
    ops = {str(n.target) for n in program.module.graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "batch_norm" in op], ops


# ---------------------------------------------------------------- the transformer encoder


@pytest.mark.parametrize(
    ("scheme", "tolerance", "min_size_ratio"),
    [
        ("int8_static", 0.02, 2.0),
        ("int8_dynamic", 0.02, 1.5),
        ("int8_weight_only", 0.01, 1.5),
        ("int4_weight_only", 0.03, 1.5),
        ("ternary", 0.06, 1.5),
    ],
)
def test_schemes_on_a_transformer_encoder(
    encoder, digits, digits_npz, digits_train_npz, tmp_path, quick, scheme, tolerance, min_size_ratio
):
    net, path = encoder
    _, _, xt, yt = digits
    report = run_recipe(
        path, quantize(scheme), data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    assert report["baseline"]["accuracy"] == pytest.approx(accuracy(net, xt, yt), abs=1e-6)
    assert report["final"]["accuracy_delta"] >= -tolerance, report["final"]
    assert report["final"]["size_ratio"] >= min_size_ratio
    for entry in report["steps"][0].get("runtimes", [report["steps"][0]]):
        assert entry["measurement"]["accuracy"] >= report["baseline"]["accuracy"] - tolerance, entry["measurement"]


# ---------------------------------------------------------------- the accuracy guard


@pytest.fixture(scope="module")
def sensitive_mlp_pt2(mlp, digits, tmp_path_factory):
    """The digits MLP with its most active hidden unit scaled up 2000x and the next layer's weights for it
    scaled down by the same factor: ReLU makes the fp32 function identical, but per-tensor int8 activations
    for the second layer now spend their whole range on that one unit."""
    import copy

    net = copy.deepcopy(mlp)
    x = torch.from_numpy(digits[0]).flatten(1)
    with torch.no_grad():
        unit = int(torch.relu(net.net[1](x)).mean(0).argmax())  # a live unit: a dead one would change nothing
        net.net[1].weight[unit] *= 2000
        net.net[1].bias[unit] *= 2000
        net.net[3].weight[:, unit] /= 2000
    return export_pt2(net, tmp_path_factory.mktemp("sensitive") / "mlp.pt2", torch.zeros(2, 1, 8, 8))


def test_guard_keeps_the_sensitive_layer_in_full_precision_even_without_a_budget(
    sensitive_mlp_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    """int8 without max_accuracy_drop is held to the default budget (RECOMMEND_BUDGET): the layer that
    loses the accuracy stays in float, and the report names it and says why."""
    report = run_recipe(
        sensitive_mlp_pt2,
        quantize("int8_static", runtime="inductor"),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    guard = step["details"]["guard"]
    assert guard["baseline"] - guard["quantized_all"] > 0.02, "the model was built to lose accuracy under int8"
    assert guard["budget"] == RECOMMEND_BUDGET and guard["met"] and guard["kept_full_precision"][0] == "net.3", guard
    assert guard["sensitivity"]["net.3"] == max(guard["sensitivity"].values())
    assert step["details"]["layers_full_precision"] == guard["kept_full_precision"]
    assert report["final"]["accuracy_delta"] >= -RECOMMEND_BUDGET
    assert any("accuracy guard kept" in n for n in step["notes"])
    assert any("no max_accuracy_drop was set" in n for n in step["notes"])
    program = load_model(tmp_path / step["artifact_id"])  # the other two layers are still int8
    assert sum(t.dtype == torch.int8 for t in weight_tensors(program.module)) == 2


class ScaledInput(torch.nn.Module):
    """A linear classifier behind a fixed per-pixel scale it undoes in its weights: fp32 unchanged, but the
    one int8 layer's per-tensor input range is spent on the one pixel scaled up 2000x."""

    def __init__(self, linear: torch.nn.Linear, pixel: int):
        super().__init__()
        scale = torch.ones(64)
        scale[pixel] = 2000.0
        self.register_buffer("scale", scale)
        self.linear = torch.nn.Linear(64, 10)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight / scale)
            self.linear.bias.copy_(linear.bias)

    def forward(self, x):
        return self.linear(x.flatten(1) * self.scale)


def test_a_default_budget_that_cannot_hold_is_said_not_failed(digits, digits_train_npz, digits_npz, tmp_path, quick):
    x, y, _, _ = digits
    linear = train(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x, y, epochs=5)[1]
    pixel = int(torch.from_numpy(x).flatten(1).std(0).argmax())  # a pixel that varies: it carries information
    path = export_pt2(ScaledInput(linear, pixel).eval(), tmp_path / "scaled.pt2", torch.zeros(2, 1, 8, 8))
    report = run_recipe(
        path,
        quantize("int8_static", runtime="inductor"),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    guard = step["details"]["guard"]
    assert not guard["met"] and guard["baseline"] - guard["quality"] > RECOMMEND_BUDGET, guard
    assert any("over the default budget" in n for n in step["notes"]), step["notes"]
    assert report["final"]["artifact_id"] == step["artifact_id"]  # stored and measured, the job not failed


def test_guard_that_cannot_be_met_fails_the_step_and_keeps_the_best_candidate(
    digits, digits_unlabelled_npz, tmp_path, quick
):
    # a linear classifier has one layer, and at least one layer must stay quantized: binary weights change
    # some of its predictions, so agreement with the fp32 model cannot stay within 0.0001
    x, y, _, _ = digits
    linear = train(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)), x, y, epochs=5)
    path = export_pt2(linear, tmp_path / "linear.pt2", torch.zeros(2, 1, 8, 8))
    with pytest.raises(StepFailedError, match="cannot meet max_accuracy_drop 0.0001") as failure:
        run_recipe(
            path,
            quantize("binary", keep_first_last=False, max_accuracy_drop=0.0001),
            data_path=digits_unlabelled_npz,
            out_dir=tmp_path / "out",
            settings=quick,
        )
    report = failure.value.report.model_dump(mode="json")
    step = report["steps"][0]
    assert report["failed"].startswith("step 1 (quantize) failed")
    assert (tmp_path / "out" / step["artifact_id"]).is_file()
    guard = step["details"]["guard"]
    assert guard["met"] is False and guard["metric"] == "agreement"
    assert step["measurement"]["agreement"] < 1.0


def test_fp16_guard_reports_quality(cnn_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2, quantize("fp16", max_accuracy_drop=0.01), data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    assert report["steps"][0]["details"]["guard"]["met"] is True


def test_scheme_format_pairs_that_cannot_work_are_refused(cnn, tmp_path):
    from workers.compression import RecipeError

    onnx_path = save_model(cnn, InputSpec((None, 1, 8, 8)), ModelFormat.ONNX, tmp_path / "cnn.onnx")
    for scheme in ("int8_qat", "binary", "int4_weight_only"):
        with pytest.raises(RecipeError, match=f"\\(quantize {scheme}\\) does not accept onnx"):
            run_recipe(onnx_path, quantize(scheme), out_dir=tmp_path / scheme)
    with pytest.raises(RecipeError, match="calibrates activation ranges on data: add a dataset"):
        run_recipe(onnx_path, quantize("int8_static"), out_dir=tmp_path / "nodata")
    with pytest.raises(RecipeError, match="runtime 'onnxruntime' does not apply to binary"):
        run_recipe(onnx_path, quantize("binary", runtime="onnxruntime"), out_dir=tmp_path / "rt")
    with pytest.raises(RecipeError, match="already quantized"):
        run_recipe(
            onnx_path,
            {
                "steps": [
                    {"method": "quantize", "scheme": "int8_dynamic"},
                    {"method": "quantize", "scheme": "int8_dynamic"},
                ]
            },
            out_dir=tmp_path / "twice",
        )


def test_a_gemm_bias_stored_as_a_row_does_not_stop_onnxruntime(tmp_path, quick):
    # magika stores Gemm biases as [1, N]: onnxruntime 1.32's int32-bias scale adjustment fails on them with
    # "truth value of an array ... is ambiguous"; the step quantizes again without that adjustment
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "B"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")],
        "row_bias",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path, data = tmp_path / "row_bias.onnx", tmp_path / "x.npz"
    onnx.save(model, str(path))
    np.savez(data, x=rng.standard_normal((64, 8)).astype(np.float32))
    report = run_recipe(path, quantize("int8_static"), data_path=data, out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]
    assert int8_initializers(tmp_path / "out" / step["artifact_id"]) == 1
    assert step["measurement"]["agreement"] > 0.99, step["measurement"]
