"""`quantize`: lower-precision weights (and activations) for a smaller, and where the runtime allows,
faster model. One verb, one typed config; the scheme picks the technique."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import StepFailedError
from ..formats import LoadedModel, ModelFormat, export_program, save_model
from ..hardware import cpu_has_vnni
from ..steps.quantize import QuantizeStep, output_format
from .base import StepContext, StepResult

DYNAMIC_ONNX_OPS = ["MatMul", "Gemm", "Attention", "LSTM", "GRU"]


class CastInputs(nn.Module):
    """Runs a half-precision model behind the original fp32 interface: float inputs are cast in,
    outputs are cast back to fp32, so the artifact is a drop-in replacement."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.inner = inner
        self.dtype = dtype
        # inference wrapper; set directly because .eval() recurses and exported programs refuse train()/eval()
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        out = self.inner(x)
        return out.float() if out.is_floating_point() else out


def quantize(model: LoadedModel, step: QuantizeStep, ctx: StepContext) -> StepResult:
    fmt = output_format(step, model.format)
    path = ctx.artifact_path(fmt, step.scheme)
    reduce_range = (not cpu_has_vnni()) if step.reduce_range is None else step.reduce_range
    if step.scheme in ("fp16", "bf16"):
        dtype = torch.float16 if step.scheme == "fp16" else torch.bfloat16
        model.module.to(dtype)
        save_model(CastInputs(model.module, dtype), model.require_spec(), fmt, path)
        notes = [f"weights and compute in {step.scheme}; inputs and outputs stay fp32"]
        if ctx.device == "cpu":
            notes.append(
                f"{step.scheme} compute on CPU is only fast with native half-precision units; see the measured latency"
            )
        return StepResult(path, fmt, notes)
    if model.format == ModelFormat.ONNX:
        return _int8_dynamic_onnx(model, path, reduce_range)
    return _int8_dynamic_torch(model, path, reduce_range)


def _int8_dynamic_torch(model: LoadedModel, path, reduce_range: bool) -> StepResult:
    # PT2E rather than torchao's quantize_(): quantize_ swaps nn.Linear modules, and an uploaded .pt2
    # program is a graph with no modules to swap. PT2E (torchao.quantization.pt2e) works on the exported
    # graph of every torch format we load, so one path serves them all.
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    spec = model.require_spec()
    graph = export_program(model.module, spec).module()
    split_reused_modules(graph)
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config(is_dynamic=True, reduce_range=reduce_range))
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            prepared(spec.example(2))  # dynamic: observers only see weights, any input will do
        converted = convert_pt2e(prepared)
    except Exception as e:
        raise StepFailedError(f"int8 dynamic quantization failed: {type(e).__name__}: {e}") from None
    int8_weights = drop_unused_weights(converted)
    if not int8_weights:
        raise StepFailedError("int8_dynamic found no Linear or Conv layer to quantize in this model; try fp16 or bf16")
    save_model(converted, spec, ModelFormat.PT2, path)
    convs = sum(1 for t in int8_weights if t.ndim > 2)
    return StepResult(
        path,
        ModelFormat.PT2,
        [
            f"int8 per-channel weights: {len(int8_weights) - convs} linear, {convs} conv; activations quantized per "
            "batch" + (" with reduce_range (CPU without VNNI)" if reduce_range else ""),
            "eager PyTorch runs int8 weights through dequantize, so this artifact is smaller but not faster "
            "on CPU; for int8 speed on CPU export to onnx first, then int8_dynamic runs in onnxruntime",
        ],
    )


def split_reused_modules(graph: torch.fx.GraphModule) -> int:
    """Gives each call of a reused single-op module (torchvision's ResNet calls one ReLU several times)
    its own source partition. The x86 quantizer groups nodes by their innermost source module
    (`nn_module_stack`) and rejects a group with several outputs. Returns how many nodes were relabelled."""
    groups: dict[str, list[torch.fx.Node]] = {}
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            groups.setdefault(list(stack.values())[-1][0], []).append(node)
    relabelled = 0
    for fqn, nodes in groups.items():
        members = set(nodes)
        # one op per call and no call feeding another: separate uses of one module, not one multi-op module
        if len(nodes) < 2 or len({n.target for n in nodes}) != 1 or any(u in members for n in nodes for u in n.users):
            continue
        for n in nodes:
            stack = dict(n.meta["nn_module_stack"])
            key, (_, cls) = list(stack.items())[-1]
            stack[key] = (f"{fqn}@{n.name}", cls)
            n.meta["nn_module_stack"] = stack
            relabelled += 1
    return relabelled


def drop_unused_weights(graph: torch.fx.GraphModule) -> list[torch.Tensor]:
    """convert_pt2e folds int8 weights into new constants but keeps the fp32 originals as parameters;
    saving those would make the int8 artifact larger than fp32. Removes every parameter the graph no
    longer reads; returns the int8 weight constants the graph holds."""
    graph.graph.eliminate_dead_code()
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    for name, _ in list(graph.named_parameters()):
        if name not in used:
            owner, _, leaf = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, leaf)
    graph.recompile()
    int8 = []
    for target in sorted(used):
        obj = graph
        for part in target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor) and obj.dtype == torch.int8:
            int8.append(obj)
    return int8


def _int8_dynamic_onnx(model: LoadedModel, path, reduce_range: bool) -> StepResult:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = path.with_name(path.stem + "_pre.onnx")
    try:
        quant_pre_process(str(model.path), str(pre), skip_symbolic_shape=True)
        # MatMul-like ops only, as in the torch path: ORT's dynamic ConvInteger is slower than fp32 Conv on
        # CPU, and convolutions want static quantization (calibrated activations) instead
        quantize_dynamic(
            str(pre),
            str(path),
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            op_types_to_quantize=DYNAMIC_ONNX_OPS,
        )
    except Exception as e:
        raise StepFailedError(f"onnxruntime dynamic quantization failed: {type(e).__name__}: {e}") from None
    finally:
        pre.unlink(missing_ok=True)
    return StepResult(
        path,
        ModelFormat.ONNX,
        [
            "onnxruntime dynamic quantization: int8 weights for "
            + ", ".join(DYNAMIC_ONNX_OPS)
            + (", reduce_range" if reduce_range else ""),
            "convolutions stay fp32 under dynamic quantization",
        ],
    )
