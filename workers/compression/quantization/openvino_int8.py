"""int8 on OpenVINO through NNCF's post-training quantization (min-max activation ranges over the job's
calibration batches, per-channel weights, fast bias correction), run by OpenVINO's CPU plugin.

The model reaches OpenVINO through its ONNX form (OpenVINO's own converter), so its layers carry the ONNX
node names: the accuracy guard keeps a layer in float by NNCF's ignored scope, matched on those names."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..contract.errors import StepFailedError
from ..contract.recipe.quantize import QuantizeConfig
from ..contract.vocabulary import Runtime
from ..formats import ModelFormat
from ..formats.onnx import NUMPY_TYPES, onnx_feed
from ..formats.openvino import OV_TO_ONNX, OpenVinoModule, from_onnx, run_float_in_f32, save_openvino
from ..hardware import cpu_features, cpu_has_amx, cpu_has_vnni, openvino_precision
from .candidates import Backend, calibration_batches
from .guard import Scorer
from .onnx_int8 import WEIGHTLESS_OPS, onnx_layers

QUICK_BATCHES = 4


class OpenVinoCandidate:
    """A quantized OpenVINO model: compiled once when first called (scoring), saved as the IR zip."""

    def __init__(self, model, threads: int | None, names: tuple[str, ...] | None):
        self.model, self.threads, self.names = model, threads, names
        self._module: OpenVinoModule | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._module is None:
            self._module = OpenVinoModule(self.model, threads=self.threads)
            if self.names:
                self._module.bind_inputs(self.names)
        return self._module(x)

    def save(self, path: Path) -> Path:
        return save_openvino(self.model, path)


def feeds(model, batches: list[np.ndarray], names: tuple[str, ...] | None) -> list[dict[str, np.ndarray]]:
    """Calibration batches as OpenVINO feeds, by input name (several inputs unpacked from dimension 1)."""
    inputs = list(model.inputs)
    types = {i.get_any_name(): NUMPY_TYPES.get(OV_TO_ONNX.get(i.get_element_type().get_type_name())) for i in inputs}
    order = names or (inputs[0].get_any_name(),)
    return [onnx_feed(x, order, types) for x in batches]


def overflow_fix():
    """Without VNNI (or AMX) the CPU multiplies u8 by s8 with `vpmaddubsw`, whose int16 pair sums saturate: NNCF
    then quantizes every layer's weights to 7 bits (its overflow fix), not only the first layer's (its default).
    Measured on an AVX2 CPU without VNNI: a token-id classifier's int8 kept top-1 agreement 0.854 with the
    default, 0.958 with the fix on every layer (output cosine 0.920 and 0.9996; tests/test_named_inputs.py, the
    bf16 tables case)."""
    from nncf.quantization.advanced_parameters import OverflowFix

    saturates = "avx2" in cpu_features() and not (cpu_has_vnni() or cpu_has_amx())
    return OverflowFix.ENABLE if saturates else OverflowFix.FIRST_LAYER


# OpenVINO's layer ops: what stays quantized when the guard keeps the ops without weights in full precision
LAYER_TYPES = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}


def weightless_types(model) -> list[str]:
    return sorted({op.get_type_name() for op in model.get_ops()} - LAYER_TYPES - {"Parameter", "Result", "Constant"})


def nncf_quantize(
    model, calibration: list[dict], *, kept_nodes=(), kept_types=(), fast: bool = False, defaults: bool = False
):
    """NNCF's post-training quantization of an OpenVINO model; `kept_nodes` (ONNX node names) and ops of
    `kept_types` stay float. `defaults`: every advanced option at NNCF's default (the peer, as a user's one
    call makes it)."""
    import nncf

    ignored = nncf.IgnoredScope(
        patterns=[rf"^{re.escape(n)}(/.*)?$" for n in kept_nodes], types=list(kept_types), validate=False
    )
    try:
        advanced = nncf.AdvancedQuantizationParameters(disable_bias_correction=fast, overflow_fix=overflow_fix())
        return nncf.quantize(
            model,
            nncf.Dataset(calibration),
            subset_size=len(calibration),
            fast_bias_correction=True,
            ignored_scope=ignored,
            advanced_parameters=None if defaults else advanced,
        )
    except Exception as e:
        raise StepFailedError(f"NNCF quantization failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None


def openvino_backend(
    source: Path,
    step: QuantizeConfig,
    ctx,
    scorer: Scorer | None,
    work: Path,
    names: tuple[str, ...] | None = None,
) -> Backend:
    """int8_static on OpenVINO from the model's fp32 ONNX form (`source`)."""
    if step.scheme != "int8_static":
        raise StepFailedError(f"{step.scheme} is not offered on OpenVINO; int8_static is")
    layers = onnx_layers(source)
    if not layers:
        raise StepFailedError("the model has no Conv, Gemm or MatMul with stored weights to quantize")
    model = from_onnx(source)
    batches = [x.cpu().numpy() for x in calibration_batches(ctx.data, step.calibration_batches, "cpu")]
    calibration = feeds(model, batches, names)
    threads = torch.get_num_threads()

    def build(kept: frozenset[str], quick: bool):
        nodes = [layers[n] for n in kept if n in layers]
        chosen = calibration[:QUICK_BATCHES] if quick else calibration
        whole = WEIGHTLESS_OPS in kept  # the ops without weights in full precision: not quantized, and f32
        types = weightless_types(model) if whole else ()
        quantized = nncf_quantize(model, chosen, kept_nodes=nodes, kept_types=types, fast=quick)
        if whole:
            run_float_in_f32(quantized)
        return OpenVinoCandidate(quantized, threads, names)

    notes = [
        "OpenVINO int8 (NNCF post-training quantization: min-max activation ranges, per-channel weights, fast "
        f"bias correction) on OpenVINO's CPU plugin; layers left in float run in {openvino_precision()}"
    ]
    return Backend(Runtime.OPENVINO, ModelFormat.OPENVINO, list(layers), build, notes, groups=[WEIGHTLESS_OPS])
