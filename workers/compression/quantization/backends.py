"""The ways to quantize a model, one builder each: PT2E int8 (static, dynamic, QAT) lowered by inductor,
packed low-bit weights (int8/int4 weight-only, binary, ternary), and onnxruntime int8. Each returns a
`Backend` whose `build(kept, quick)` makes a candidate with the `kept` layers in full precision."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..contract.errors import StepFailedError
from ..contract.recipe.quantize import QuantizeConfig
from ..contract.vocabulary import Device, Runtime
from ..formats import ModelFormat, save_model
from ..formats.onnx import bf16_tensors
from ..formats.packed import replace_weight
from ..formats.spec import InputSpec
from ..hardware import cpu_has_vnni
from ..training import finetune
from . import onnx_int8, pt2e
from .candidates import (
    Backend,
    OnnxCandidate,
    TorchCandidate,
    calibration_batches,
    choose_reduce_range,
    on_each_runtime,
)
from .guard import Scorer
from .openvino_int8 import openvino_backend
from .packed import IntWeight, SignSTE, SignWeight, pack_embeddings

if TYPE_CHECKING:
    from ..step import StepContext

INT4_GROUP = 32


def torch_backends(
    module: nn.Module,
    spec: InputSpec,
    order: list[str],
    step: QuantizeConfig,
    ctx: StepContext,
    scorer: Scorer | None,
    work: Path,
) -> list[Backend]:
    module.eval()
    match step.scheme:
        case "int8_static":
            runtimes = list(step.RUNTIMES) if step.runtime == "auto" else [step.runtime]
            out, failed = on_each_runtime(
                runtimes,
                lambda runtime: _static_backend(runtime, module, spec, order, step, ctx, scorer, work),
                lambda runtime, why: f"{runtime} could not build int8_static for this model: {why}",
            )
            if not out:
                raise StepFailedError("; ".join(failed))
            for backend in out:  # whichever is recommended names the runtime that could not build it
                backend.notes.extend(failed)
            return out
        case "int8_qat":
            return [_pt2e_backend(module, spec, order, step, ctx, scorer, "qat")]
        case "int8_dynamic":
            backend = _pt2e_backend(module, spec, order, step, ctx, scorer, "dynamic")
            if any(isinstance(m, nn.RNNBase) for m in module.modules()):
                # neither torchao's PT2E quantizers nor an exportable torch.ao path quantize recurrent layers
                backend.notes.append(
                    "recurrent layers (LSTM/GRU/RNN) stay fp32 in PyTorch; to quantize them export to ONNX first: "
                    "onnxruntime's dynamic quantization covers LSTM and GRU"
                )
            return [backend]
        case "int8_weight_only" | "int4_weight_only" | "binary" | "ternary":
            return [_packed_backend(module, spec, order, step, ctx)]
    raise StepFailedError(f"unknown scheme {step.scheme}")


def fp32_onnx(module, spec, work: Path) -> Path:
    """The model's fp32 ONNX form, exported once per step (onnxruntime, OpenVINO and the peers start there)."""
    path = work / "fp32.onnx"
    return path if path.is_file() else save_model(module, spec, ModelFormat.ONNX, path)


def _static_backend(runtime: str, module, spec, order, step, ctx, scorer, work: Path) -> Backend:
    if runtime == Runtime.INDUCTOR:
        return _pt2e_backend(module, spec, order, step, ctx, scorer, "static")
    fp32 = fp32_onnx(module, spec, work)
    if runtime == Runtime.OPENVINO:
        return openvino_backend(fp32, step, ctx, scorer, work, spec.names or None)
    # the export takes the model's named inputs by name (export_arguments), fed from the packed tensor
    backend = onnx_backend(fp32, step, ctx, scorer, work, spec.names or None)
    if cast := bf16_tensors(module):
        backend.notes.append(
            f"{len(cast)} bf16 tensor(s) ({', '.join(cast[:3])}) exported as fp32: onnxruntime's CPU kernels lack bf16"
        )
    return backend


def _pt2e_backend(module, spec, order, step, ctx, scorer, mode: str) -> Backend:
    calibrated = mode != "dynamic" and ctx.data is not None  # dynamic int8: observers only see weights
    calibration = calibration_batches(ctx.data, step.calibration_batches, ctx.device) if calibrated else []
    quick_calibration = calibration[:4]
    lowered = mode != "dynamic"  # dynamic int8 has no inductor lowering that beats fp32 on CPU here

    lower = lowered and ctx.device == Device.CPU
    built: dict[tuple, TorchCandidate] = {}  # the reduce_range comparison's winner is the guard's first candidate
    exported: list[torch.fx.GraphModule] = []

    def traced() -> torch.fx.GraphModule:
        """A copy of the model exported once (the guard builds up to dozens of candidates from it)."""
        if not exported:
            source = copy.deepcopy(module)
            pack_embeddings(source)
            exported.append(pt2e.traced(source, spec))
        return copy.deepcopy(exported[0])

    def build(kept: frozenset[str], quick: bool, reduce_range: bool | None = None, as_mode: str = mode):
        rr = chosen_rr if reduce_range is None else reduce_range
        key = (kept, quick, rr, as_mode)
        if key in built:
            return built[key]
        if as_mode == "qat":
            source = copy.deepcopy(module)
            pack_embeddings(source)
            graph = _qat(source, spec, step, ctx, rr, kept, quick, calibration)
        elif as_mode == "static":
            graph, _ = pt2e.quantize_static(
                traced(), lambda: quick_calibration if quick else calibration, reduce_range=rr, exclude=kept
            )
        else:
            prepared = pt2e.prepare_traced(traced(), "dynamic", reduce_range=rr, exclude=kept)
            with torch.no_grad():
                prepared(spec.example(2).to(ctx.device))  # dynamic: observers only see weights
            graph, _ = pt2e.convert(prepared)
        # quick candidates (sensitivity) are scored on the reference graph: compiling each would cost seconds
        built[key] = TorchCandidate(graph, spec, pt2e.compile_for_cpu(graph) if lower and not quick else None)
        return built[key]

    chosen_rr, rr_details = not cpu_has_vnni(), {}
    if mode == "dynamic":
        chosen_rr = chosen_rr if step.reduce_range is None else step.reduce_range
    else:
        # saturation shows only in the lowered int8 kernels, so both settings are compiled and scored; for
        # QAT on post-training candidates (activation ranges barely move in training, and it trains once)
        chosen_rr, rr_details = choose_reduce_range(
            step, lambda rr: build(frozenset(), False, rr, "static" if mode == "qat" else mode), scorer
        )
    runtime = Runtime.INDUCTOR if lowered and ctx.device == Device.CPU else Runtime.EAGER
    notes = [
        f"PT2E int8 {mode} ({'quantization-aware training' if mode == 'qat' else 'post-training'}), x86 "
        f"quantizer, per-channel int8 weights{', 7-bit activations (reduce_range)' if chosen_rr else ''}"
    ]
    if any(isinstance(m, nn.Embedding) for m in module.modules()):
        notes.append("embedding tables stored as int8 rows with a scale each, rebuilt at load (lookups stay fp32)")
    if lowered:
        notes.append(
            "runs fast only when lowered: load with torch.export.load(path).module(), set "
            "torch._inductor.config.freezing = True, then torch.compile; measured that way here (runtime inductor)"
        )
    else:
        notes.append(
            "eager PyTorch runs int8 weights through dequantize, so this artifact is smaller but not faster on "
            "CPU; for int8 speed use int8_static (inductor or onnxruntime)"
        )
    return Backend(runtime, ModelFormat.PT2, order, build, notes, {"reduce_range": rr_details} if rr_details else {})


def _qat(source, spec, step, ctx, rr, kept, quick, calibration) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import allow_exported_model_train_eval

    reference = copy.deepcopy(source).eval()
    prepared = pt2e.prepare(source, spec, "qat", reduce_range=rr, exclude=kept)
    allow_exported_model_train_eval(prepared)
    prepared.eval()
    with torch.no_grad():  # observers start from calibrated ranges, as in post-training quantization
        for x in calibration[:4] if quick else calibration:
            prepared(x)
    if not quick and step.epochs:
        _train(prepared, step, ctx, reference, "quantization-aware training")
    prepared.eval()  # batch norm and dropout back in inference form before conversion
    graph, _ = pt2e.convert(prepared)
    return graph


def _packed_backend(module, spec, order, step, ctx) -> Backend:
    """Weight-only int8/int4 and binary/ternary: weights packed in the .pt2, fp32 compute."""
    scheme = step.scheme
    if scheme in ("binary", "ternary"):
        levels = 2 if scheme == "binary" else 3

        def pack(weight):
            return SignWeight(weight, levels)
    else:
        bits = 8 if scheme == "int8_weight_only" else 4
        group = step.group_size if step.group_size is not None else (INT4_GROUP if bits == 4 else None)

        def pack(weight):
            return IntWeight(weight, bits, _fitting_group(weight, group))

    def build(kept: frozenset[str], quick: bool):
        model = copy.deepcopy(module)
        chosen = [n for n in order if n not in kept]
        if scheme in ("binary", "ternary") and step.epochs and not quick:
            _finetune_signs(model, chosen, levels, step, ctx, reference=module)
        # tied weights (a language model's lm_head and token table are one tensor) are packed once and read
        # by both: packed apart, SmolLM2's 28M-entry table was stored twice
        shared: dict[int, nn.Module] = {}
        for name in chosen:
            weight = model.get_submodule(name).weight
            if id(weight) not in shared:
                shared[id(weight)] = pack(weight)
            replace_weight(model, name, shared[id(weight)])
        if scheme in ("int8_weight_only", "int4_weight_only"):
            pack_embeddings(model, bits, group, shared)
        return TorchCandidate(model.eval(), spec)

    notes = [_packed_note(step)]
    if ctx.device == Device.CPU or scheme in ("binary", "ternary"):
        notes.append(
            "no fast low-bit kernel runs these weights here: they are unpacked to fp32 at load, so the "
            "artifact is smaller, not faster"
        )
    return Backend(Runtime.EAGER, ModelFormat.PT2, order, build, notes)


def _fitting_group(weight: torch.Tensor, group: int | None) -> int | None:
    """The group size, or one scale per output channel where the group does not divide the layer's inputs."""
    inputs = weight[0].numel()
    return group if group is not None and inputs % group == 0 else None


def _packed_note(step: QuantizeConfig) -> str:
    match step.scheme:
        case "binary":
            return "binary weights: sign (1 bit) x mean|W| per output channel, packed 8 per byte"
        case "ternary":
            return "ternary weights: {-1, 0, +1} (2 bits, threshold 0.7·mean|W|) x scale per output channel"
        case "int4_weight_only":
            return f"int4 weights, symmetric, one scale per {step.group_size or INT4_GROUP} inputs, two per byte"
    return "int8 weights, symmetric, " + (
        f"one scale per {step.group_size} inputs" if step.group_size else "one scale per output channel"
    )


def _train(model: nn.Module, step: QuantizeConfig, ctx: StepContext, reference: nn.Module, stage: str) -> None:
    """The step's fine-tuning: labels when the dataset has them, else distilling the fp32 `reference`."""
    finetune(
        model,
        ctx.data,
        epochs=step.epochs,
        learning_rate=step.learning_rate,
        batch_size=step.batch_size,
        device=ctx.device,
        reference=reference,
        progress=lambda f, s: ctx.progress(f, f"{stage}: {s}"),
    )


def _finetune_signs(model: nn.Module, names: list[str], levels: int, step, ctx, reference: nn.Module) -> None:
    """Straight-through-estimator fine-tuning: the forward pass uses binary/ternary weights, the
    optimizer updates the latent fp32 weights, which are then quantized for good."""
    for name in names:
        parametrize.register_parametrization(model.get_submodule(name), "weight", SignSTE(levels))
    _train(model, step, ctx, reference, "straight-through fine-tuning")
    for name in names:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=False)


def onnx_backend(
    source: Path,
    step: QuantizeConfig,
    ctx: StepContext,
    scorer: Scorer | None,
    work: Path,
    names: tuple[str, ...] | None = None,
) -> Backend:
    """onnxruntime's int8 on an ONNX upload; `names` are its inputs as packed by the run (several inputs)."""
    if step.scheme not in ("int8_static", "int8_dynamic"):
        raise StepFailedError(f"{step.scheme} does not apply to ONNX models; use int8_static or int8_dynamic")
    pre = onnx_int8.preprocess(source, work / "pre.onnx")
    layers = onnx_int8.onnx_layers(pre)
    if not layers:
        raise StepFailedError("the ONNX model has no Conv, Gemm or MatMul with stored weights to quantize")
    static = step.scheme == "int8_static"
    calibration = (
        [x.cpu().numpy() for x in calibration_batches(ctx.data, step.calibration_batches, "cpu")] if static else []
    )
    weightless = onnx_int8.weightless_nodes(pre) if static else []  # dynamic int8 quantizes layers only
    counter = iter(range(10**9))
    threads = torch.get_num_threads()

    def build(kept: frozenset[str], quick: bool, reduce_range: bool | None = None):
        rr = chosen_rr if reduce_range is None else reduce_range
        target = work / f"candidate_{next(counter)}.onnx"
        nodes = [layers[n] for n in kept if n in layers] + (weightless if onnx_int8.WEIGHTLESS_OPS in kept else [])
        if static:
            onnx_int8.quantize_static(
                pre,
                target,
                calibration[:4] if quick else calibration,
                reduce_range=rr,
                exclude_nodes=nodes,
                names=names,
            )
        else:
            onnx_int8.quantize_dynamic(pre, target, reduce_range=rr, exclude_nodes=nodes)
        return OnnxCandidate(target, threads, names)

    chosen_rr, rr_details = not cpu_has_vnni(), {}
    if static:
        chosen_rr, rr_details = choose_reduce_range(step, lambda rr: build(frozenset(), False, rr), scorer)
    elif step.reduce_range is not None:
        chosen_rr = step.reduce_range
    kind = "static QDQ (calibrated u8 activations)" if static else "dynamic (MatMul/Gemm/LSTM/GRU)"
    notes = [
        f"onnxruntime {kind}, per-channel s8 weights{', reduce_range' if chosen_rr else ''}, after ORT pre-processing"
    ]
    if not static:
        notes.append("convolutions stay fp32 under dynamic quantization")
    return Backend(
        Runtime.ONNXRUNTIME,
        ModelFormat.ONNX,
        list(layers),
        build,
        notes,
        {"reduce_range": rr_details} if rr_details else {},
        groups=[onnx_int8.WEIGHTLESS_OPS] if weightless else [],
    )
