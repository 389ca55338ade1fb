"""The hostile corpus, built by the tests themselves (nothing opaque is shipped): each file does what a
tenant who wants another tenant's data, or the worker, would try. Every payload only touches paths the
test names, so a payload that does run leaves evidence and harms nothing."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Tuple  # noqa: UP035  (TorchScript reads typing.Tuple)

import torch
from torch import nn


class CreatesFile:
    """Unpickling this runs `touch marker`: the classic pickle payload."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _plain_pt2(path: Path) -> Path:
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.register_buffer("offset", torch.ones(2))

        def forward(self, x):
            return self.fc(x) + self.offset

    torch.export.save(torch.export.export(Small(), (torch.zeros(1, 4),)), str(path))
    return path


def _rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """The archive with some members replaced or added (names relative to its root folder)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        root = zin.namelist()[0].split("/", 1)[0]
        for name in zin.namelist():
            member = name[len(root) + 1 :]
            zout.writestr(name, replace.pop(member, None) or zin.read(name))
        for member, data in replace.items():
            zout.writestr(f"{root}/{member}", data)
    return target


def pt2_pickled_constant(path: Path, marker: Path) -> Path:
    """A .pt2 whose constants config marks a constant `use_pickle: true`: torch.export.load unpickles it
    with plain pickle, whatever weights_only says."""
    plain = _plain_pt2(path.with_suffix(".plain.pt2"))
    config = {
        "config": {"offset": {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}
    }
    return _rewrite(
        plain,
        path,
        {
            "data/constants/model_constants_config.json": json.dumps(config).encode(),
            "data/constants/tensor_0": pickle.dumps(CreatesFile(marker)),
        },
    )


def pt2_pickled_sample_inputs(path: Path, marker: Path) -> Path:
    """A .pt2 whose sample inputs fail a weights_only load: torch then retries with weights_only=False."""
    plain = _plain_pt2(path.with_suffix(".plain.pt2"))
    payload = path.with_suffix(".inputs.pt")
    torch.save(((CreatesFile(marker),), {}), str(payload))
    return _rewrite(plain, path, {"data/sample_inputs/model.pt": payload.read_bytes()})


def pt2_compiled_code(path: Path) -> Path:
    """A .pt2 carrying an AOTInductor shared object (native code the loader would dlopen)."""
    plain = _plain_pt2(path.with_suffix(".plain.pt2"))
    return _rewrite(plain, path, {"data/aotinductor/model/model.so": b"\x7fELF" + b"\0" * 60})


class _FileTensor(nn.Module):
    """TorchScript whose __setstate__ (run by torch.jit.load, i.e. at inspection) maps a file of the
    worker's into a buffer: `shared` creates it when missing (a write outside its folder); otherwise its
    first bytes are read into `stolen`, which any artifact made from the model would carry."""

    def __init__(self, target: str, shared: bool, size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 4))
        self.target, self.shared, self.size = target, shared, size
        self.register_buffer("stolen", torch.zeros(size, dtype=torch.uint8))

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool, int, bool, torch.Tensor]:  # noqa: UP006
        return (self.target, self.shared, self.size, self.training, self.weight)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool, int, bool, torch.Tensor]) -> None:  # noqa: UP006
        self.target, self.shared, self.size, self.training, self.weight = state
        self.stolen = torch.from_file(self.target, self.shared, self.size, dtype=torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.t() + self.stolen[:1].float() * 0


def torchscript_reads(path: Path, target: Path, size: int) -> Path:
    torch.jit.save(torch.jit.script(_FileTensor(str(target), False, size)), str(path))
    return path


def torchscript_writes(path: Path, target: Path) -> Path:
    torch.jit.save(torch.jit.script(_FileTensor(str(target), True, 64)), str(path))
    return path


class _Spins(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):  # never false: the inspection's forward pass never returns
            x = x.abs() + 1.0
        return x


def torchscript_loops(path: Path) -> Path:
    torch.jit.save(torch.jit.script(_Spins()), str(path))
    return path


def onnx_external_data(path: Path, target: Path) -> Path:
    """An ONNX model whose weight's external data points at a file of the worker's (absolute path)."""
    import onnx
    from onnx import TensorProto, helper

    weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 2])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", str(target)), ("offset", "0"), ("length", "32")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "steal",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


# code a loader bug would let run: the sandbox must hold even then (run by tests/test_sandbox.py)
ESCAPES = {
    "socket": "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)",
    "environ": "print(open('/proc/1/environ', 'rb').read().decode(errors='replace'))",
    "read_store": "print(open({store!r}, 'rb').read(64))",
    "write_outside": "open({outside!r}, 'w').write('escaped')",
    "home": "import os; print(os.listdir('/root'))",
}
