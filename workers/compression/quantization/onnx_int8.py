"""int8 ONNX models through onnxruntime.quantization: static (QDQ, calibrated on the job's dataset)
and dynamic, per-channel weights, after ORT's own pre-processing (shape inference, graph optimization).

Layers are named by their weight initializer ("features.0" for "features.0.weight", as PyTorch's
exporter writes them), else by the node name, so recipes and the accuracy guard name ONNX layers the
way they name torch layers."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from ..contract.errors import StepFailedError

LAYER_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU"]
# What the accuracy guard calls the graph's ops without weights when it keeps them in full precision, as one
# group. Static QDQ quantizes the activations of Add, Mul, Sub, ReduceSum... too; where a model computes a
# difference of near-equal values through them (magika's hand-written LayerNorm: E[x^2] - E[x]^2) int8 leaves
# nothing: ORT's int8 kept top-1 agreement 0.095 with every op quantized, 1.000 with its three layers alone.
# No single layer's sensitivity showed it (each read 0.94): the damage was in no layer.
WEIGHTLESS_OPS = "ops without weights"


def onnx_layers(path: Path) -> dict[str, str]:
    """{layer name: node name} for every Conv/Gemm/MatMul node whose weight is stored: an initializer, or a
    Constant node's output (Paddle2ONNX stores every weight so: PP-OCR's detector)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    stored = {t.name for t in model.graph.initializer}
    stored |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    layers = {}
    for node in model.graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in stored:
            weight = node.input[1]
            layers[weight.removesuffix(".weight") if weight.endswith(".weight") else node.name] = node.name
    return layers


def weightless_nodes(path: Path) -> list[str]:
    """Every node that is not a layer (named: run after `preprocess`)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type not in LAYER_OPS and node.name]


def preprocess(source: Path, target: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    except Exception as e:
        raise StepFailedError(f"onnxruntime pre-processing failed: {type(e).__name__}: {e}") from None
    _name_nodes(target)
    return target


def _name_nodes(path: Path) -> None:
    """Gives every node a unique name. Exporters may leave them empty (CenterFace's are): the guard then
    knew one layer called '' and keeping it in float excluded every unnamed node, i.e. quantized nothing."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    renamed = False
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name, renamed = f"{node.op_type}_{i}" if not node.name else f"{node.name}_{i}", True
        seen.add(node.name)
    if renamed:
        onnx.save(model, str(path))


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


class _Calibration(CalibrationDataReader):
    """onnxruntime's calibration reader over a list of input batches (packed named inputs are fed by name)."""

    def __init__(
        self,
        input_name: str,
        batches: Iterable[np.ndarray],
        names: tuple[str, ...] | None = None,
        types: dict | None = None,
    ):
        self.input_name, self.batches, self.names, self.types = input_name, iter(batches), names, types or {}

    def get_next(self):
        from ..formats.onnx import onnx_feed

        x = next(self.batches, None)
        return None if x is None else onnx_feed(x, self.names or (self.input_name,), self.types)


def output_joins(path: Path) -> list[str]:
    """The weightless nodes that make a graph output (a detector's Concat of boxes and scores, a Softmax):
    kept in float. Quantized, such a Concat shares one scale across its inputs, so a YOLO head's scores
    (0-1) get the step of its pixel boxes (0-320): nudenet's 320n lost 4 of its 6 detections on 16 photos
    (mAP50 0.3 against its fp32 boxes) while the output's cosine read 0.999."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    return [
        n.name for n in graph.node if n.name and outputs.intersection(n.output) and not weights.intersection(n.input)
    ]


def quantize_static(
    source: Path,
    target: Path,
    batches: list[np.ndarray],
    *,
    reduce_range: bool,
    exclude_nodes: Iterable[str] = (),
    names: tuple[str, ...] | None = None,
) -> Path:
    """QDQ int8: u8 activations (calibrated min/max), s8 per-channel weights. `source` is pre-processed."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    from ..formats.onnx import NUMPY_TYPES

    inputs = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).get_inputs()
    types = {i.name: NUMPY_TYPES.get(i.type) for i in inputs}
    types = {k: v for k, v in types.items() if v is not None}

    def run(extra_options: dict) -> None:
        ort_quantize_static(
            str(source),
            str(target),
            _Calibration(inputs[0].name, batches, names, types),
            quant_format=QuantFormat.QDQ,
            # per-channel DequantizeLinear needs opset 13; older models (PaddleOCR, CenterFace) get per-tensor
            per_channel=_opset(source) >= 13,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=[*exclude_nodes, *output_joins(source)],
            extra_options=extra_options,
        )

    try:
        run({})
    except ValueError as e:
        # onnxruntime 1.32 widens weight scales so that int32 biases fit (on by default) and fails on a bias
        # stored as [1, N] rather than [N] (magika: "truth value of an array ... is ambiguous"). Without
        # that adjustment the biases are what every earlier release made of them.
        try:
            run({"QDQDisableWeightAdjustForInt32Bias": True})
        except Exception:
            raise StepFailedError(f"onnxruntime static quantization failed: {type(e).__name__}: {e}") from None
    except Exception as e:
        raise StepFailedError(f"onnxruntime static quantization failed: {type(e).__name__}: {e}") from None
    return target


def quantize_dynamic(source: Path, target: Path, *, reduce_range: bool, exclude_nodes: Iterable[str] = ()) -> Path:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    try:
        # MatMul-like ops only: ORT's dynamic ConvInteger is slower than fp32 Conv on CPU, and
        # convolutions want static quantization (calibrated activations) instead
        ort_quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            op_types_to_quantize=DYNAMIC_OPS,
            nodes_to_exclude=list(exclude_nodes),
        )
    except Exception as e:
        raise StepFailedError(f"onnxruntime dynamic quantization failed: {type(e).__name__}: {e}") from None
    return target
