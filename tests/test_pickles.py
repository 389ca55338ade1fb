"""Pickles are refused, and loading never runs pickle code: each payload here would create a file."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import pytest
import torch

from workers.compression import EngineError, UnsupportedFormatError, load_model


class CreatesFile:
    """Unpickling this calls open(path, "w"), creating the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_raw_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(CreatesFile(marker), protocol=4))
    with pytest.raises(UnsupportedFormatError) as info:
        load_model(path)
    assert info.value.code == "pickle_refused"
    assert "pickle" in info.value.message and "torch.export" in info.value.message
    assert not marker.exists()


def test_torch_save_of_a_module_is_refused_and_never_runs(tmp_path, cnn):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"model": cnn, "payload": CreatesFile(marker)}, path)
    with pytest.raises(UnsupportedFormatError, match="pickle"):
        load_model(path)
    assert not marker.exists()


def test_pt2_with_a_pickled_weight_payload_never_runs(tmp_path, cnn_pt2):
    """torch.export.load unpickles weights flagged use_pickle (with weights_only=False): a crafted .pt2
    must not get code run through that path."""
    marker = tmp_path / "pwned"
    payload = io.BytesIO()
    torch.save(CreatesFile(marker), payload)
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(cnn_pt2) as src:
        config_name = next(n for n in src.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(src.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True  # tells torch.export.load to unpickle this weight
        weight_name = f"{config_name.rsplit('/', 1)[0]}/{first['path_name']}"
        replaced = {config_name: json.dumps(config).encode(), weight_name: payload.getvalue()}
        with zipfile.ZipFile(crafted, "w") as dst:
            for info in src.infolist():
                dst.writestr(info, replaced.get(info.filename) or src.read(info))
    with pytest.raises(EngineError):
        load_model(crafted)
    assert not marker.exists()


def test_torchscript_lookalike_with_a_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "fake.ts"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fake/data.pkl", pickle.dumps(CreatesFile(marker), protocol=2))
        zf.writestr("fake/constants.pkl", pickle.dumps((), protocol=2))
        zf.writestr("fake/code/__torch__/m.py", "")
        zf.writestr("fake/version", "3\n")
    with pytest.raises(EngineError):
        load_model(path, input_shape=[1, 3])
    assert not marker.exists()
