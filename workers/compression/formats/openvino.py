"""OpenVINO IR models (converted, or quantized by NNCF), run with OpenVINO's CPU plugin.

The artifact is one file, a zip that holds OpenVINO's IR as it saves it, `model.xml` and `model.bin`. Load it
with OpenVINO alone (README "OpenVINO artifacts"):

    import zipfile, numpy as np, openvino as ov
    with zipfile.ZipFile("model.openvino.zip") as z:
        model = ov.Core().read_model(z.read("model.xml").decode(), ov.Tensor(np.frombuffer(z.read("model.bin"), np.uint8)))
    compiled = ov.Core().compile_model(model, "CPU")

or extract both files and `read_model("model.xml")`."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.inspection import FormatFacts
from ..contract.vocabulary import Runtime
from .archive import single_archive
from .onnx import NUMPY_TYPES, onnx_feed
from .spec import LoadedModel, ModelFormat, check_input_names, spec_of_inputs

IR_XML, IR_BIN = "model.xml", "model.bin"
OV_TO_TORCH = {
    "f32": torch.float32,
    "f16": torch.float16,
    "i64": torch.int64,
    "i32": torch.int32,
    "boolean": torch.bool,
}
OV_TO_ONNX = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "i32": "tensor(int32)"}
# The precision a model's float ops must run in, kept in the IR's rt_info. OpenVINO's CPU plugin runs them in
# bf16 where the CPU has bf16 instructions and reads no rt_info option for it (2026.4: set_rt_info(...,
# ["runtime_options", "INFERENCE_PRECISION_HINT"]) is ignored), so the artifact carries it under our key and
# OpenVinoModule asks for it: bf16 alone cost magika's fp32 model 2 points of top-1 agreement on an AMX CPU.
FLOAT_PRECISION = ["squeeze", "inference_precision"]


def run_float_in_f32(model) -> None:
    model.set_rt_info("f32", FLOAT_PRECISION)


def float_precision(model) -> str | None:
    """'f32' when the model asks for its float ops in f32 (run_float_in_f32), else None (the plugin's own).
    An uploaded IR can carry the key too: only the plugin's own values are taken, anything else is ignored."""
    if not model.has_rt_info(FLOAT_PRECISION):
        return None
    value = model.get_rt_info(FLOAT_PRECISION).astype(str)
    return value if value in ("f32", "bf16", "f16") else None


def core():
    import openvino as ov

    return ov.Core()


class OpenVinoModule(nn.Module):
    """A compiled OpenVINO model that measurement and later steps call like a module. One inference request
    at a time, on `threads` threads, latency-first (what a service calling it once per request gets)."""

    def __init__(self, model, *, threads: int | None = None):
        super().__init__()
        self.model, self.threads = model, threads
        self.compiled = self._compile(threads)
        self.input_names = tuple(i.get_any_name() for i in model.inputs)
        self.input_name = self.input_names[0]
        self.input_types = {
            i.get_any_name(): NUMPY_TYPES.get(OV_TO_ONNX.get(i.get_element_type().get_type_name()))
            for i in model.inputs
        }
        self.packed_names: tuple[str, ...] | None = self.input_names if len(self.input_names) > 1 else None

    def _compile(self, threads: int | None):
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision := float_precision(self.model):
            config["INFERENCE_PRECISION_HINT"] = precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        return core().compile_model(self.model, "CPU", config)

    def bind_inputs(self, names: tuple[str, ...]) -> None:
        check_input_names(names, self.input_names, self.input_names)
        self.packed_names = names

    def set_threads(self, threads: int) -> None:
        if threads != self.threads:
            self.compiled, self.threads = self._compile(threads), threads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = onnx_feed(x.detach().cpu().numpy(), self.packed_names or (self.input_name,), self.input_types)
        results = self.compiled(feed)
        outs = [torch.from_numpy(np.array(results[o])) for o in self.compiled.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)


def from_onnx(path: Path):
    """An ONNX file as an OpenVINO model (OpenVINO's own converter)."""
    import openvino as ov

    return ov.convert_model(str(path))


def save_openvino(model, path: Path) -> Path:
    """The model's IR, zipped as one file (`model.xml` + `model.bin`)."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="squeeze-ov-") as folder:
        xml = Path(folder) / IR_XML
        ov.save_model(model, str(xml), compress_to_fp16=False)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(xml, IR_XML)
            z.write(xml.with_suffix(".bin"), IR_BIN)
    return path


def read_ir(path: Path):
    """The OpenVINO model in an artifact zip, read from memory (nothing is extracted)."""
    import openvino as ov

    names = single_archive(path)
    if sorted(names) != [IR_BIN, IR_XML]:
        raise InvalidModelError(f"an OpenVINO artifact holds {IR_XML} and {IR_BIN} only; this one holds {names[:5]}")
    with zipfile.ZipFile(path) as z:
        xml, weights = z.read(IR_XML).decode(), z.read(IR_BIN)
    try:
        return core().read_model(xml, ov.Tensor(np.frombuffer(weights, np.uint8)))
    except Exception as e:
        raise InvalidModelError(f"OpenVINO cannot read this model: {str(e).splitlines()[0][:300]}") from None


def load_openvino(path: Path, *, threads: int | None = None) -> LoadedModel:
    model = read_ir(path)
    inputs = list(model.inputs)
    for i in inputs:
        if i.get_element_type().get_type_name() not in OV_TO_TORCH:
            raise InvalidModelError(f"unsupported OpenVINO input type {i.get_element_type()} ({i.get_any_name()})")
    shapes = [tuple(d.get_length() if d.is_static else None for d in i.get_partial_shape()) for i in inputs]
    spec = spec_of_inputs(
        [i.get_any_name() for i in inputs],
        [(None, *s[1:]) for s in shapes],
        [OV_TO_TORCH[i.get_element_type().get_type_name()] for i in inputs],
        [f"{i.get_any_name()} {i.get_element_type()} {i.get_partial_shape()}" for i in inputs],
    )
    return LoadedModel(
        module=OpenVinoModule(model, threads=threads),
        format=ModelFormat.OPENVINO,
        input_spec=spec,
        size_bytes=path.stat().st_size,
        runtime=Runtime.OPENVINO,
        path=path,
        facts=FormatFacts(producer="openvino"),
    )
