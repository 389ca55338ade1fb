"""int8 through PT2E (torchao.quantization.pt2e): export -> prepare -> calibrate or train -> convert,
with the x86 inductor quantizer (per-channel weights), and the inductor lowering that makes the
converted graph fast on CPU. A converted graph run eagerly only simulates int8 (dequantize -> fp32
kernels) and is slower than fp32; compiled with freezing, inductor fuses the quantize/dequantize pairs
into oneDNN int8 convolutions and matmuls."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import cache
from typing import Literal

import torch
from torch import nn

from ..contract.errors import StepFailedError
from ..formats import export_program
from ..formats.spec import InputSpec

Mode = Literal["static", "dynamic", "qat"]


def quantizer_for(mode: Mode, *, reduce_range: bool, exclude: Iterable[str] = ()):
    # importing this module also registers torchao's int8 lowering passes with inductor (see compile_for_cpu)
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    quantizer = _keeping_quantizer_class()(exclude)
    config = x86.get_default_x86_inductor_quantization_config(
        is_qat=mode == "qat", is_dynamic=mode == "dynamic", reduce_range=reduce_range
    )
    quantizer.set_global(config)
    return quantizer


@cache
def _keeping_quantizer_class():
    """Defined on first use: importing torchao's quantizer is not free, and only quantization needs it."""
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    class KeepingQuantizer(X86InductorQuantizer):
        """The x86 inductor quantizer with a set of layers kept in full precision (accuracy guard, first/last
        layers), annotated in one pass. torchao's own way, `set_module_name_qconfig(name, None)` per layer,
        scans the whole graph once per name (pattern matching each time): the guard's sensitivity pass keeps
        all layers but one, and on MiniLM (38 layers) that was 1.4 s per build, 45 builds. Same result: a
        pattern is kept when all its nodes come from one of the kept layers, as with one filter per layer."""

        def __init__(self, kept: Iterable[str]):
            super().__init__()
            self.kept = frozenset(kept)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            if self.kept:
                self._annotate_with_config(model, None, self._all_from_one_kept_layer)
            return super().annotate(model)

        def _all_from_one_kept_layer(self, nodes) -> bool:
            common = None
            for node in nodes:
                stack = node.meta.get("nn_module_stack", {}).values()
                names = {_layer_name(path) for path, _ in stack} & self.kept
                common = names if common is None else common & names
                if not common:
                    return False
            return bool(common)

    return KeepingQuantizer


def _layer_name(path: str) -> str:
    # torchao's module-name filter strips the same prefix (torchao.quantization.pt2e.quantizer.utils)
    return path[len("L['self'].") :] if path.startswith("L['self'].") else path


def traced(module: nn.Module, spec: InputSpec) -> torch.fx.GraphModule:
    """`module` exported as a tree of real layers (so layer names reach the quantizer), ready to prepare. An
    export costs seconds (2 s for MiniLM): the guard's builds each prepare a copy of one traced graph."""
    graph = export_program(module, spec).module()
    # outputs the wrapper drops (BERT's pooler beside last_hidden_state) leave dead Linear+tanh chains, which
    # torchao's fusion annotator indexes without checking (IndexError): computed for no one, so removed
    graph.graph.eliminate_dead_code()
    graph.recompile()
    split_reused_modules(graph)
    return graph


def prepare(
    module: nn.Module, spec: InputSpec, mode: Mode, *, reduce_range: bool, exclude: Iterable[str] = ()
) -> torch.fx.GraphModule:
    """Exports `module` and inserts observers (static, dynamic) or fake-quantizers (qat)."""
    return prepare_traced(traced(module, spec), mode, reduce_range=reduce_range, exclude=exclude)


def prepare_traced(
    graph: torch.fx.GraphModule, mode: Mode, *, reduce_range: bool, exclude: Iterable[str] = ()
) -> torch.fx.GraphModule:
    """Observers or fake-quantizers inserted into `graph` (changed in place: pass a copy to keep it)."""
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    quantizer = quantizer_for(mode, reduce_range=reduce_range, exclude=exclude)
    if mode == "qat":
        _conv_bn_patterns_only_for_the_convs_present()
    try:
        return (prepare_qat_pt2e if mode == "qat" else prepare_pt2e)(graph, quantizer)
    except Exception as e:
        raise StepFailedError(f"int8 {mode} quantization failed to prepare: {type(e).__name__}: {e}") from None


def convert(prepared: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, list[torch.Tensor]]:
    """The int8 graph and its int8 weight constants (the fp32 originals dropped)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    _conv_bn_patterns_only_for_the_convs_present()
    try:
        converted = convert_pt2e(prepared)
    except Exception as e:
        raise StepFailedError(f"int8 conversion failed: {type(e).__name__}: {e}") from None
    return converted, drop_unused_weights(converted)


CONV_KINDS = frozenset({"conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"})


def _conv_kinds(graph: torch.fx.GraphModule) -> set[str]:
    """The kinds of convolution among the graph's aten ops (conv2d, conv_transpose1d, ...)."""
    packets = {getattr(getattr(n.target, "_overloadpacket", None), "__name__", None) for n in graph.graph.nodes}
    return packets & CONV_KINDS


@cache
def _conv_bn_patterns_only_for_the_convs_present() -> None:
    """torchao's QAT conv + batch-norm fusion (at prepare) and folding (at convert) try each of four conv kinds
    (1-d, 2-d and their transposes), exporting up to 14 pattern graphs per kind whether or not the model has
    that kind: 14 s a kind at convert on a 2-core CPU, 55 of a QAT job's 105 s on a small CNN. A kind the
    graph does not hold matches nothing, so it is skipped: the same graph for a quarter of the work. A graph
    whose convolutions are none of the four (an aten.convolution) goes through every kind, as before.
    Wrapped here because torchao has no switch for it (0.17: `_fuse_conv_bn_qat`, `_fold_conv_bn_qat` call
    these helpers through their module)."""
    from torchao.quantization.pt2e import qat_utils

    for name in ("_fuse_conv_bn_qat_helper", "_fold_conv_bn_qat_helper"):
        helper = getattr(qat_utils, name)

        def only_present(m, conv_fn, example_inputs, is_cuda, _helper=helper):
            present = _conv_kinds(m)
            if present and conv_fn.__name__ not in present:
                return m
            return _helper(m, conv_fn, example_inputs, is_cuda=is_cuda)

        setattr(qat_utils, name, only_present)


def quantize_static(
    graph: torch.fx.GraphModule,
    calibration: Callable[[], Iterable[torch.Tensor]],
    *,
    reduce_range: bool,
    exclude: Iterable[str] = (),
) -> tuple[torch.fx.GraphModule, list[torch.Tensor]]:
    """`graph`: from `traced` (changed in place)."""
    prepared = prepare_traced(graph, "static", reduce_range=reduce_range, exclude=exclude)
    with torch.no_grad():
        for x in calibration():
            prepared(x)
    return convert(prepared)


def compile_for_cpu(graph: nn.Module) -> CompiledPerShape:
    """Lowers a converted PT2E graph with inductor: freezing lets it pre-pack int8 weights for oneDNN and
    fuse quantize/dequantize pairs into int8 convolutions and matmuls. torchao's lowering passes (registered
    when its x86 quantizer module is imported) make resnet18 3.8x faster than fp32 here; torch's built-in
    ones alone reach 1.5x."""
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401  (registers the passes)

    inductor_config.freezing = True
    return CompiledPerShape(graph)


class CompiledPerShape(nn.Module):
    """One inductor compilation per input shape, each from its own copy of the graph, each checked once
    against the uncompiled graph.

    Why not one torch.compile: with dynamic shapes, quantized convolutions fail a stride check (torch
    2.14.1); with static shapes, freezing rewrites the graph's constants in place, so one shape's
    compilation corrupts the next; and a Linear on 3-D input compiled at batch 1 computes wrong outputs
    (a transformer encoder fell from 0.97 to 0.13 accuracy). A shape whose compiled outputs disagree with
    the graph runs the graph itself, and is listed in `fallback_shapes` for the report."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self._orig_mod = graph  # the measurement reads weights and FLOPs here (measure.metrics.uncompiled)
        self.compiled: dict[tuple, object] = {}
        self.fallback_shapes: list[tuple] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        run = self.compiled.get(key)
        if run is not None:
            return run(x)
        compiled = torch.compile(copy.deepcopy(self._orig_mod), dynamic=False)
        out, expected = compiled(x), self._orig_mod(x)
        if _agrees(out, expected):
            self.compiled[key] = compiled
            return out
        self.compiled[key] = self._orig_mod
        self.fallback_shapes.append(tuple(x.shape))
        return expected


def _agrees(out, expected) -> bool:
    """int8 kernels round differently from the dequantize -> fp32 reference; a wrong lowering is far off."""
    from ..measure.metrics import all_tensors

    outs, expecteds = all_tensors(out), all_tensors(expected)  # every head of a multi-output model
    if len(outs) != len(expecteds):
        return False
    for o, e in zip(outs, expecteds):
        o, e = o.float().reshape(len(o), -1), e.float().reshape(len(e), -1)
        if not bool(torch.nn.functional.cosine_similarity(o, e, dim=1).min() >= 0.98):
            return False
    return True


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
