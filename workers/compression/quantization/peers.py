"""The field's one-call int8 recipes, built beside Squeeze's own artifacts and measured in the same run, so a
report can say how Squeeze's recommendation compares with what a user would get without it:

- onnxruntime `quantize_static` as its documentation's CPU recipe has it: `quant_pre_process` (without the
  symbolic shape inference where that fails), then QDQ, per-channel s8 weights, u8 activations, min-max
  calibration, everything else left at its default;
- NNCF `quantize` on OpenVINO with every default (the model converted from ONNX by OpenVINO).

Both calibrate on the same batches as Squeeze's own int8. Neither is tuned: a peer is what one call gives."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np

from ..contract.errors import short_error
from ..contract.vocabulary import Runtime
from ..formats import ModelFormat
from ..formats.openvino import from_onnx, save_openvino
from .openvino_int8 import feeds, nncf_quantize

ORT_PEER = "onnxruntime quantize_static"
NNCF_PEER = "NNCF quantize on OpenVINO"


def ort_peer(source: Path, batches: list[np.ndarray], target: Path, names: tuple[str, ...] | None) -> Path:
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..formats.onnx import NUMPY_TYPES
    from .onnx_int8 import _Calibration

    source, target = source.resolve(), target.resolve()
    pre = target.with_suffix(".pre.onnx")
    try:
        # a failed symbolic shape inference saves what it got ("sym_shape_infer_temp.onnx" and its external
        # data) in the current directory: run it where those land among this peer's files, not where we started
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch, contextlib.chdir(scratch):
            try:
                quant_pre_process(str(source), str(pre))
            except Exception:
                # "Incomplete symbolic shape inference" on dynamic H/W or sequence length (yolov8n, PP-OCR,
                # MiniLM): what a user does next, as ORT's own message suggests, is to skip it
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        inputs = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()
        types = {i.name: t for i in inputs if (t := NUMPY_TYPES.get(i.type)) is not None}
        quantize_static(
            str(pre),
            str(target),
            _Calibration(inputs[0].name, batches, names, types),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
        )
    finally:
        pre.unlink(missing_ok=True)
    # what quantize_static writes is not always loadable (per-channel DequantizeLinear on a model below opset
    # 13: CenterFace): a peer that cannot run is a peer that failed, said in the report, not a failed job
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    return target


def nncf_peer(source: Path, batches: list[np.ndarray], target: Path, names: tuple[str, ...] | None) -> Path:
    model = from_onnx(source)
    return save_openvino(nncf_quantize(model, feeds(model, batches, names), defaults=True), target)


PEERS = {
    ORT_PEER: (ort_peer, Runtime.ONNXRUNTIME, ModelFormat.ONNX),
    NNCF_PEER: (nncf_peer, Runtime.OPENVINO, ModelFormat.OPENVINO),
}


def build_peers(
    source: Path, batches: list[np.ndarray], folder: Path, names, runtimes: set[str] | None = None
) -> tuple[list[tuple[str, Path, str, ModelFormat]], list[str]]:
    """Each peer's artifact: [(peer, path, runtime, format)], and why any could not be built; only the peers
    on `runtimes` when it is given (`auto` limited to some runtimes builds no other)."""
    built, failed = [], []
    for peer, (make, runtime, fmt) in PEERS.items():
        if runtimes is not None and runtime not in runtimes:
            continue
        target = folder / f"peer_{runtime}{'.onnx' if fmt == ModelFormat.ONNX else '.openvino.zip'}"
        try:
            built.append((peer, make(source, batches, target, names), runtime, fmt))
        except MemoryError:
            raise
        except Exception as e:
            target.unlink(missing_ok=True)
            failed.append(f"the peer {peer} could not be built for this model: {short_error(e)}")
    return built, failed
