"""Every accepted format round-trips (save -> load -> same outputs); detection is from bytes."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import onnx
import pytest
import torch

from workers.compression import InvalidModelError, ModelFormat, UnsupportedFormatError, detect_format, load_model
from workers.compression.formats import InputSpec, save_model, save_weights

X = torch.from_numpy(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))


def outputs(module, x=X):
    with torch.no_grad():
        return module(x)


def test_pt2_round_trip(cnn, cnn_pt2, tmp_path):
    model = load_model(cnn_pt2)
    assert model.format == ModelFormat.PT2
    assert model.input_spec.shape == (None, 1, 8, 8)
    torch.testing.assert_close(outputs(model.module), outputs(cnn))
    again = save_model(model.module, model.input_spec, ModelFormat.PT2, tmp_path / "again.pt2")
    torch.testing.assert_close(outputs(load_model(again).module), outputs(cnn))


def test_torchscript_round_trip(cnn, tmp_path):
    path = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.trace(cnn, X), str(path))
    model = load_model(path, input_shape=[1, 1, 8, 8])
    assert model.format == ModelFormat.TORCHSCRIPT and model.runtime == "torchscript"
    torch.testing.assert_close(outputs(model.module), outputs(cnn))
    again = save_model(model.module, model.input_spec, ModelFormat.TORCHSCRIPT, tmp_path / "again.ts")
    torch.testing.assert_close(outputs(load_model(again).module), outputs(cnn))


def test_torchscript_without_shape_says_so(cnn, tmp_path):
    path = tmp_path / "cnn.ts"
    torch.jit.save(torch.jit.trace(cnn, X), str(path))
    with pytest.raises(InvalidModelError, match="input_shape"):
        load_model(path).require_spec()


def test_onnx_round_trip(cnn, tmp_path):
    path = save_model(cnn, InputSpec((None, 1, 8, 8)), ModelFormat.ONNX, tmp_path / "cnn.onnx")
    model = load_model(path)
    assert model.format == ModelFormat.ONNX and model.runtime == "onnxruntime"
    assert model.input_spec.shape == (None, 1, 8, 8)  # the batch stays dynamic
    torch.testing.assert_close(outputs(model.module), outputs(cnn), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(outputs(model.module, X[:3]), outputs(cnn, X[:3]), atol=1e-4, rtol=1e-4)


def _external_onnx(cnn, folder):
    path = save_model(cnn, InputSpec((None, 1, 8, 8)), ModelFormat.ONNX, folder / "tmp.onnx")
    proto = onnx.load(str(path))
    onnx.save_model(
        proto, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin", size_threshold=1024
    )
    path.unlink()
    return folder / "model.onnx"


def test_onnx_external_data_inside_a_zip_loads(cnn, tmp_path):
    folder = tmp_path / "bundle"
    folder.mkdir()
    _external_onnx(cnn, folder)
    archive = shutil.make_archive(str(tmp_path / "bundle"), "zip", folder)
    model = load_model(archive)
    assert model.format == ModelFormat.ONNX
    torch.testing.assert_close(outputs(model.module), outputs(cnn), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "missing.bin"])
def test_onnx_external_data_outside_the_upload_is_refused(cnn, tmp_path, location):
    folder = tmp_path / "bundle"
    folder.mkdir()
    path = _external_onnx(cnn, folder)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(path))
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    with pytest.raises(InvalidModelError, match="outside the upload|does not contain"):
        load_model(path)


def test_safetensors_with_torchvision_architecture(tmp_path):
    import torchvision

    net = torchvision.models.squeezenet1_1(num_classes=10).eval()
    path = save_weights(net, tmp_path / "w.safetensors", arch="squeezenet1_1", arch_kwargs={"num_classes": 10})
    model = load_model(path, input_shape=[1, 3, 64, 64])
    assert model.format == ModelFormat.SAFETENSORS
    assert model.facts.arch == "squeezenet1_1" and model.input_spec.shape == (None, 3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(outputs(model.module, x), outputs(net, x))


def test_safetensors_with_timm_architecture_given_by_caller(tmp_path):
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("resnet10t", pretrained=False, num_classes=5).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    with pytest.raises(InvalidModelError, match="architecture name"):
        load_model(path)
    model = load_model(path, arch="timm:resnet10t", arch_kwargs={"num_classes": 5}, input_shape=[1, 3, 64, 64])
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(outputs(model.module, x), outputs(net, x))


def test_safetensors_that_do_not_fit_the_architecture(tmp_path):
    import torchvision

    net = torchvision.models.squeezenet1_1(num_classes=10)
    path = save_weights(net, tmp_path / "w.safetensors", arch="squeezenet1_1", arch_kwargs={"num_classes": 7})
    with pytest.raises(InvalidModelError, match="do not fit"):
        load_model(path)
    with pytest.raises(InvalidModelError, match="unknown torchvision architecture"):
        load_model(path, arch="not_a_net")


def _tiny_bert(folder):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    net = BertForSequenceClassification(config).eval()
    net.save_pretrained(folder, safe_serialization=True)
    return net


def test_huggingface_zip_round_trip(tmp_path):
    net = _tiny_bert(tmp_path / "bert")
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path, "bert")
    model = load_model(archive)
    assert model.format == ModelFormat.HUGGINGFACE
    assert model.input_spec.dtype == torch.int64 and model.input_spec.high == 100
    ids = torch.randint(0, 100, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(outputs(model.module, ids), net(input_ids=ids).logits)


def test_huggingface_remote_code_is_refused(tmp_path):
    _tiny_bert(tmp_path / "bert")
    config = json.loads((tmp_path / "bert" / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (tmp_path / "bert" / "config.json").write_text(json.dumps(config))
    archive = shutil.make_archive(str(tmp_path / "bert"), "zip", tmp_path / "bert")
    with pytest.raises(InvalidModelError, match="remote code"):
        load_model(archive)


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("model.safetensors", b"")
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(InvalidModelError, match="outside the archive"):
        load_model(archive)
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_detection_reads_bytes_not_names(cnn_pt2, tmp_path):
    disguised = tmp_path / "model.onnx"
    disguised.write_bytes(cnn_pt2.read_bytes())
    assert detect_format(disguised) == ModelFormat.PT2
    with pytest.raises(InvalidModelError, match="declared onnx but its bytes are pt2"):
        load_model(disguised, format="onnx")


@pytest.mark.parametrize("content", [b"", b"hello world, not a model", b"\x08\x07garbage"])
def test_unknown_bytes_are_refused_with_the_accepted_formats(tmp_path, content):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises((UnsupportedFormatError, InvalidModelError)) as info:
        load_model(path)
    if content and content[0] != 0x08:
        assert "torch.export" in info.value.message and "ONNX" in info.value.message
