"""Pruning on the digits models and small torchvision networks: sparsity exact, channels really removed,
artifacts reload without the source class, recovery helps, bad parameters refused before any work."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from tests.engine import run_recipe
from workers.compression import EngineError, RecipeError, load_model
from workers.compression.contract.inspection import ModelInfo
from workers.compression.contract.recipe import check_recipe, parse_recipe
from workers.compression.pruning.storage import BITS, SHAPE, VALUES, pack_bits, unpack_bits

from .digits import DigitsCNN


def prune(**step):
    return {"steps": [{"method": "prune", **step}]}


def dense_weights(artifact_path, names):
    """The artifact's weights for the named layers as the file stores them, decoded from sparse storage
    (load_model rebuilds them once at load; this reads the file's own tensors)."""
    module = torch.export.load(str(artifact_path)).module()
    out = {}
    buffers = dict(module.named_buffers())
    for name in names:
        if f"{name}.weight.{BITS}" in buffers:  # reloaded programs keep the buffers, not the decoding module
            shape = buffers[f"{name}.weight.{SHAPE}"].tolist()
            mask = unpack_bits(buffers[f"{name}.weight.{BITS}"], int(np.prod(shape)))
            w = torch.zeros(mask.numel()).masked_scatter(mask, buffers[f"{name}.weight.{VALUES}"]).view(shape)
        else:
            w = module.get_submodule(name).weight
        out[name] = w.detach()
    return module, out


PRUNED = ["features.0", "features.3", "head.1"]  # head.3 is the output layer: always kept whole


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_sparsity_is_exact_and_the_file_shrinks_with_it(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick, scope
):
    sizes = {}
    for sparsity in (0.5, 0.9):
        out = tmp_path / str(sparsity)
        report = run_recipe(
            cnn_pt2,
            prune(kind="unstructured", sparsity=sparsity, scope=scope),
            data_path=digits_npz,
            out_dir=out,
            settings=quick,
        )
        step = report["steps"][0]
        module, weights = dense_weights(out / step["artifact_id"], PRUNED)
        zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
        total = {n: w.numel() for n, w in weights.items()}
        if scope == "layer":
            for n in PRUNED:
                assert zeros[n] == round(sparsity * total[n]), n
        else:
            assert sum(zeros.values()) == round(sparsity * sum(total.values()))
        # masks are permanent: no pruning reparametrisation is left in the artifact
        names = [n for n, _ in [*module.named_parameters(), *module.named_buffers()]]
        assert not any("weight_orig" in n or "weight_mask" in n for n in names)
        assert any(n.endswith(BITS) for n in names) and any(n.endswith(VALUES) for n in names)
        # the engine's loader rebuilds the dense weights once: same outputs as decoding on every call
        x = torch.randn(4, 1, 8, 8)
        assert torch.allclose(load_model(out / step["artifact_id"]).module(x), module(x), atol=1e-6)
        m = step["measurement"]
        assert m["params"] == report["baseline"]["params"]
        assert m["nonzero_params"] < m["params"] * (1 - sparsity) + 1000
        sizes[sparsity] = m["size_bytes"]
    assert sizes[0.9] < sizes[0.5] < report["baseline"]["size_bytes"]


def test_bit_packing_round_trips():
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 8, 9, 1000):
        mask = torch.rand(n, generator=g) > 0.5
        assert torch.equal(unpack_bits(pack_bits(mask), n), mask)


def test_structured_removes_channels_and_reloads_without_the_source_class(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    report = run_recipe(
        cnn_pt2,
        prune(kind="structured", sparsity=0.5),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    base, step = report["baseline"], report["steps"][0]
    m = step["measurement"]
    assert m["params"] < 0.5 * base["params"] and m["macs"] < 0.5 * base["macs"]
    assert step["details"]["kept_whole"] == ["head.3"]
    artifact = tmp_path / step["artifact_id"]
    # a fresh interpreter that never imported the test's classes loads and runs it
    code = (
        "import torch, sys; m = torch.export.load(sys.argv[1]).module(); "
        "print(tuple(m(torch.randn(5, 1, 8, 8)).shape)); "
        "print(m.get_submodule('features.0').weight.shape[0] if hasattr(m, 'features') else -1)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(artifact)], capture_output=True, text=True, check=True)
    shape, channels = out.stdout.split("\n")[:2]
    assert shape == "(5, 10)"
    assert 0 < int(channels) < 16 or int(channels) == -1


def test_target_macs_reduction(cnn_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        prune(kind="structured", target_macs_reduction=0.6),
        data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    assert report["steps"][0]["measurement"]["macs"] <= 0.4 * report["baseline"]["macs"]


class ResidualDepthwise(nn.Module):
    """Residual adds and depthwise convolutions: channels coupled across layers."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 32, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 16, 1),
            nn.BatchNorm2d(16),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.fc(self.pool(x).flatten(1))


@pytest.mark.parametrize("decomposed", [False, True])
def test_residual_and_depthwise_prune_without_shape_errors(digits, tmp_path, quick, decomposed):
    net = ResidualDepthwise().eval()
    ep = torch.export.export(net, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    if decomposed:  # programs as some exporters save them: core aten (addmm, view, native batch norm)
        ep = ep.run_decompositions()
    path = tmp_path / "resdw.pt2"
    torch.export.save(ep, str(path))
    report = run_recipe(path, prune(kind="structured", sparsity=0.5), out_dir=tmp_path / "out", settings=quick)
    base, m = report["baseline"], report["steps"][0]["measurement"]
    assert m["params"] < base["params"] and m["macs"] < base["macs"]
    module = load_model(tmp_path / "out" / report["steps"][0]["artifact_id"]).module
    assert module(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_torchvision_weights_prune_structured(tmp_path, quick):
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    path = tmp_path / "mnv2.safetensors"
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(path),
        metadata={"arch": "mobilenet_v2", "arch_kwargs": '{"num_classes": 10, "width_mult": 0.25}'},
    )
    report = run_recipe(
        path,
        prune(kind="structured", sparsity=0.3),
        load={"input_shape": [1, 3, 32, 32]},
        out_dir=tmp_path / "out",
        settings=quick,
    )
    step = report["steps"][0]
    assert step["format"] == "pt2"
    assert step["measurement"]["params"] < report["baseline"]["params"]


def test_two_four_pattern_is_exact(mlp_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        mlp_pt2, prune(kind="semi_structured_2_4"), data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    names = [n for n in ("net.1", "net.3")]
    _, weights = dense_weights(tmp_path / step["artifact_id"], names)
    for name, w in weights.items():
        groups = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
        assert bool((groups >= 2).all()), name
        assert float((groups == 2).float().mean()) > 0.99, name
    assert any("no speedup" in n for n in step["notes"])


def test_recovery_fine_tuning_restores_accuracy(cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick):
    accuracy = {}
    for epochs in (0, 4):
        report = run_recipe(
            cnn_pt2,
            prune(kind="structured", sparsity=0.5, finetune_epochs=epochs),
            data_path=digits_train_npz,
            eval_data_path=digits_npz,
            out_dir=tmp_path / str(epochs),
            settings=quick,
        )
        accuracy[epochs] = report["steps"][0]["measurement"]["accuracy"]
    # How much 50 % structured pruning alone costs varies with the trained fixture and the order tests ran in
    # (0.74 to 0.96 seen, baseline 0.99), so the test asks what recovery promises: back to within 3 points of
    # the original, and better than not recovering (a recovery that does nothing fails one or the other).
    assert accuracy[4] >= report["baseline"]["accuracy"] - 0.03, accuracy
    assert accuracy[4] > accuracy[0], accuracy


def test_unlabelled_data_recovers_by_distillation_and_holds_out_eval_data(
    cnn_pt2, digits_unlabelled_npz, tmp_path, quick
):
    report = run_recipe(
        cnn_pt2,
        prune(kind="unstructured", sparsity=0.9, steps=2, finetune_epochs=2, criterion="taylor"),
        data_path=digits_unlabelled_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    assert report["eval_data"]["held_out_fraction"] == 0.2
    assert report["data"]["samples"] + report["eval_data"]["samples"] == 1400
    m = report["steps"][0]["measurement"]
    assert m["accuracy"] is None and m["agreement"] >= 0.8


def test_sensitivity_report_covers_every_prunable_layer(cnn_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        prune(kind="unstructured", sparsity=0.8, scope="layer", sensitivity=True),
        data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    sens = report["steps"][0]["details"]["sensitivity"]
    assert sens["metric"] == "accuracy" and sorted(r["layer"] for r in sens["layers"]) == sorted(PRUNED)
    drops = [r["drop"] for r in sens["layers"]]
    assert drops == sorted(drops, reverse=True) and drops[0] > 0


CNN_LAYERS = ModelInfo(
    format="pt2",
    runtime="eager",
    size_bytes=1,
    params=1,
    nonzero_params=1,
    layers=[
        {"name": "features.0", "type": "Conv2d", "in": 1, "out": 16},
        {"name": "features.3", "type": "Conv2d", "in": 16, "out": 32},
        {"name": "head.1", "type": "Linear", "in": 512, "out": 64},
        {"name": "head.3", "type": "Linear", "in": 64, "out": 10, "output": True},
    ],
)


@pytest.mark.parametrize(
    ("step", "has_data", "message"),
    [
        ({"kind": "unstructured", "sparsity": 1.0}, True, "less than 1"),
        ({"kind": "structured", "sparsity": 0}, True, "greater than 0"),
        ({"kind": "semi_structured_2_4", "sparsity": 0.7}, True, "0.5 by definition"),
        ({"kind": "unstructured", "target_macs_reduction": 0.5}, True, "structured pruning only"),
        ({"kind": "structured", "exclude": ["features.*", "head.1"]}, True, "nothing is left to prune"),
        ({"kind": "structured", "exclude": ["nope"]}, True, "matches no layer"),
        ({"kind": "unstructured", "criterion": "taylor"}, False, "needs a dataset"),
        ({"kind": "structured", "finetune_epochs": 2}, False, "needs a dataset"),
    ],
)
def test_bad_parameters_are_refused_before_any_work(step, has_data, message):
    with pytest.raises(RecipeError, match=message):
        check_recipe(parse_recipe(prune(**step)), "pt2", model_info=CNN_LAYERS, has_data=has_data)


def test_prune_must_come_before_quantize():
    with pytest.raises(RecipeError, match="prune before quantizing"):
        check_recipe(
            parse_recipe(
                {"steps": [{"method": "quantize", "scheme": "fp16"}, {"method": "prune", "kind": "structured"}]}
            ),
            "pt2",
        )
    formats = check_recipe(
        parse_recipe(
            {"steps": [{"method": "prune", "kind": "structured"}, {"method": "quantize", "scheme": "int8_dynamic"}]}
        ),
        "pt2",
    )
    assert formats == ["pt2", "pt2"]


def test_inspection_lists_prunable_layers(cnn_pt2):
    from workers.compression.inspection import inspect_model

    info = inspect_model(cnn_pt2)
    assert info.layers == CNN_LAYERS.layers  # the output layer (head.3) is named: pruning keeps it whole
    assert [o.shape for o in info.outputs] == [[None, 10]]


def test_exported_model_is_unchanged_by_lifting(cnn, cnn_pt2):
    from workers.compression.pruning.lift import lift_layers

    module = load_model(cnn_pt2).module
    x = torch.randn(4, 1, 8, 8)
    lifted = lift_layers(module)
    assert lifted == 5  # 2 conv, 1 batch norm, 2 linear
    assert torch.allclose(module(x), cnn(x), atol=1e-5)
    assert isinstance(module.get_submodule("head.1"), nn.Linear)
    _ = DigitsCNN


def test_hugging_face_encoder_prunes_its_feed_forward_layers(tmp_path, quick):
    import shutil

    from .test_formats import _tiny_bert

    _tiny_bert(tmp_path / "bert")
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")
    np.savez(tmp_path / "tokens.npz", x=np.random.default_rng(0).integers(0, 100, (32, 64)))
    for kind in ("structured", "unstructured"):
        report = run_recipe(
            archive,
            prune(kind=kind, sparsity=0.5),
            data_path=tmp_path / "tokens.npz",
            out_dir=tmp_path / kind,
            settings=quick,
        )
        step = report["steps"][0]
        assert step["measurement"]["nonzero_params"] < report["baseline"]["nonzero_params"]
        assert step["measurement"]["agreement"] is not None
        if kind == "structured":
            assert step["measurement"]["params"] < report["baseline"]["params"]
            # the hidden width stays; attention loses whole heads (exactly: test_named_inputs.py), FFNs shrink
            assert "model.bert.encoder.layer.0.attention.output.dense" in step["details"]["kept_whole"]
            assert "model.bert.encoder.layer.0.attention.self.query" not in step["details"]["kept_whole"]
            assert "model.bert.encoder.layer.0.intermediate.dense" not in step["details"]["kept_whole"]


def test_onnx_output_on_request(cnn_pt2, digits_npz, tmp_path, quick):
    report = run_recipe(
        cnn_pt2,
        prune(kind="structured", sparsity=0.5, output="onnx"),
        data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    assert step["format"] == "onnx" and step["measurement"]["runtime"] == "onnxruntime"
    assert step["measurement"]["params"] < report["baseline"]["params"]
    assert step["measurement"]["agreement"] > 0.3


def _onnx_as_users_have_it(module: nn.Module, path, opset: int = 13):
    """An ONNX file as model zoos ship them: the TorchScript exporter, an older opset, a dynamic batch."""
    import onnx

    torch.onnx.export(
        module.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False, opset_version=opset,
        input_names=["x"], output_names=["digit_scores"],
        dynamic_axes={"x": {0: "batch"}, "digit_scores": {0: "batch"}},
    )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"classes": "0123456789"})
    onnx.save(proto, str(path))
    return path


def test_an_onnx_model_is_pruned_as_pytorch_layers_and_comes_back_as_onnx(
    cnn, digits_train_npz, digits_npz, tmp_path, quick
):
    """onnx2torch turns the graph into layers (checked against onnxruntime first), Torch-Pruning removes
    channels, recovery trains them, and the artifact is ONNX again, in the upload's format."""
    path = _onnx_as_users_have_it(cnn, tmp_path / "cnn.onnx")
    recipe = prune(kind="structured", sparsity=0.5, finetune_epochs=4)
    assert check_recipe(parse_recipe(recipe), "onnx") == ["onnx"]
    report = run_recipe(
        path, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path / "out", settings=quick
    )
    step, baseline = report["steps"][0], report["baseline"]
    assert step["format"] == "onnx" and step["measurement"]["runtime"] == "onnxruntime"
    assert baseline["runtime"] == "onnxruntime"
    assert step["details"]["macs_after"] < 0.6 * step["details"]["macs_before"]
    assert step["measurement"]["params"] < 0.6 * baseline["params"]
    assert step["measurement"]["accuracy"] >= baseline["accuracy"] - 0.05, (step["measurement"], baseline)
    artifact = load_model(tmp_path / "out" / report["final"]["artifact_id"])
    assert artifact.format == "onnx" and artifact.module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # the same interface as the upload: its input and output names, its metadata
    assert artifact.module.input_names == ("x",)
    assert [o.name for o in artifact.module.session.get_outputs()] == ["digit_scores"]
    assert artifact.module.session.get_modelmeta().custom_metadata_map.get("classes") == "0123456789"


def test_an_onnx_model_with_numbers_for_names_comes_back_with_them(cnn, digits_npz, tmp_path, quick):
    """Older exporters named every tensor by a number (centerface's outputs are '537'...'540', many inputs are
    '0'), which the TorchScript exporter refuses to give a tensor: the artifact is exported under other
    names and renamed, so it keeps the upload's interface."""
    import onnx

    path = _onnx_as_users_have_it(cnn, tmp_path / "numbered.onnx")
    proto = onnx.load(str(path))
    for node in proto.graph.node:
        node.input[:] = ["0" if v == "x" else v for v in node.input]
        node.output[:] = ["537" if v == "digit_scores" else v for v in node.output]
    proto.graph.input[0].name, proto.graph.output[0].name = "0", "537"
    onnx.save(proto, str(path))
    report = run_recipe(path, prune(kind="structured", sparsity=0.5), data_path=digits_npz, out_dir=tmp_path / "out",
                        settings=quick)
    artifact = load_model(tmp_path / "out" / report["final"]["artifact_id"])
    assert artifact.module.input_names == ("0",)
    assert [o.name for o in artifact.module.session.get_outputs()] == ["537"]
    assert artifact.module(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


def test_renaming_onnx_tensors_moves_a_name_already_taken_out_of_the_way():
    """The exported graph numbers its own tensors: when the upload's output name is one of those numbers,
    that tensor is renamed first, so the graph still computes the same thing."""
    import onnx
    from onnx import TensorProto, helper

    from workers.compression.formats.onnx_torch import rename_values

    graph = helper.make_graph(
        [helper.make_node("Relu", ["in"], ["537"]), helper.make_node("Neg", ["537"], ["out"])],
        "g",
        [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1])],
    )
    rename_values(graph, {"in": "0", "out": "537"})
    onnx.checker.check_model(helper.make_model(graph))
    assert [tuple(n.input) + tuple(n.output) for n in graph.node] == [("0", "537_"), ("537_", "537")]
    assert graph.input[0].name == "0" and graph.output[0].name == "537"


def test_an_onnx_graph_onnx2torch_cannot_convert_is_refused_with_the_operator_named(cnn, digits_npz, tmp_path, quick):
    path = tmp_path / "new_opset.onnx"
    torch.onnx.export(cnn.eval(), (torch.zeros(1, 1, 8, 8),), str(path), dynamo=True)  # opset 18+: Reshape v19
    with pytest.raises(EngineError) as refused:
        run_recipe(path, prune(kind="structured", sparsity=0.5), data_path=digits_npz, out_dir=tmp_path, settings=quick)
    assert refused.value.code == "invalid_recipe"
    assert "no converter for Reshape (opset 19)" in refused.value.message and str(tmp_path) not in refused.value.message


def test_an_exclude_pattern_is_checked_against_the_converted_onnx_layers(cnn, digits_npz, tmp_path, quick):
    path = _onnx_as_users_have_it(cnn, tmp_path / "cnn.onnx")
    with pytest.raises(EngineError) as refused:
        run_recipe(
            path, prune(kind="structured", sparsity=0.5, exclude=["features.0"]), data_path=digits_npz,
            out_dir=tmp_path / "out", settings=quick,
        )
    assert refused.value.code == "invalid_recipe" and "matches no layer" in refused.value.message
    assert "the Linear/Conv layers are:" in refused.value.message


def test_a_student_is_derived_from_an_onnx_teacher(cnn, digits_train_npz, digits_npz, tmp_path, quick):
    """derive.width narrows the converted graph into a student initialised from the teacher's channels; the
    teacher itself keeps running on onnxruntime for the soft labels."""
    path = _onnx_as_users_have_it(cnn, tmp_path / "teacher.onnx")
    recipe = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 4}]}
    assert check_recipe(parse_recipe(recipe), "onnx") == ["onnx"]  # onnx2torch's layers go back as ONNX
    report = run_recipe(
        path, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path / "out", settings=quick
    )
    step, baseline = report["steps"][0], report["baseline"]
    assert baseline["runtime"] == "onnxruntime" and step["format"] == "onnx"
    assert step["measurement"]["params"] < 0.6 * baseline["params"]
    assert step["measurement"]["accuracy"] >= baseline["accuracy"] - 0.05, (step["measurement"], baseline)


def test_recovery_keeps_the_epoch_that_scores_best_on_data_it_did_not_train_on(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    """A recovery that ruins the model (here a learning rate of 1.0) ends with the weights it started from:
    part of the training data is held out, scored before training and after every epoch, and the best
    epoch is kept, with the scores in details.recovery."""
    report = run_recipe(
        cnn_pt2,
        prune(kind="unstructured", sparsity=0.3, finetune_epochs=2, learning_rate=1.0),
        data_path=digits_train_npz,
        eval_data_path=digits_npz,
        out_dir=tmp_path,
        settings=quick,
    )
    step = report["steps"][0]
    recovery = step["details"]["recovery"]
    assert recovery["held_out_samples"] >= 10
    [kept] = recovery["per_increment"]
    assert len(kept["held_out_scores"]) == 3 and kept["epoch_kept"] == 0, kept
    assert kept["held_out_scores"][0] > max(kept["held_out_scores"][1:]), kept
    assert step["measurement"]["accuracy"] >= report["baseline"]["accuracy"] - 0.05, step["measurement"]
    assert any("recovery kept an earlier epoch" in note for note in step["notes"]), step["notes"]
