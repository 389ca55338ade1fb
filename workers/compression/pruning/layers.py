"""Which layers a model has to prune: an editable module tree for every torch format, its prunable
Conv/Linear layers, and the output layer, which pruning always keeps whole."""

from __future__ import annotations

import re

import torch
from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.formats import EAGER_FORMATS, TRANSFORMERS_FORMATS
from ..contract.inspection import LayerInfo
from ..formats.onnx_torch import onnx_as_torch
from ..formats.spec import LoadedModel, ModelFormat, module_device
from ..measure.metrics import first_tensor
from .lift import lift_layers

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
BLOCK_INDEX = re.compile(r"(^|\.)\d+(?=\.|$)")  # `.3.` in model.layers.3.mlp: which repeated block


def editable(model: LoadedModel) -> nn.Module:
    """The model as a tree of real layers: eager formats already are; a .pt2 graph gets its conv,
    linear and batch-norm calls lifted into modules; an ONNX graph is converted into a new module
    (formats/onnx_torch.py), the upload's own session left as it is."""
    if model.format == ModelFormat.PT2:
        lift_layers(getattr(model.module, "program", model.module))  # a PackedProgram holds the graph
    elif model.format == ModelFormat.ONNX:
        return onnx_as_torch(model)
    elif model.format not in (ModelFormat.SAFETENSORS, *TRANSFORMERS_FORMATS):
        raise InvalidModelError(f"{model.format} models cannot be pruned; upload a .pt2 program or weights")
    return model.module


def prunable_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules() if isinstance(m, PRUNABLE) and name]


def execution_order(module: nn.Module, example: torch.Tensor) -> list[str]:
    """The prunable (Linear/Conv) layers in the order a forward pass first runs them."""
    return list(dict.fromkeys(_calls(module, example)))


def _calls(module: nn.Module, example: torch.Tensor) -> list[str]:
    order: list[str] = []
    names = {id(m): name for name, m in prunable_layers(module)}
    hooks = [
        m.register_forward_hook(lambda mod, args, out: order.append(names[id(mod)]))
        for m in (module.get_submodule(n) for n in names.values())
    ]
    try:
        with torch.no_grad():
            first_tensor(module(example.to(module_device(module))))
    finally:
        for h in hooks:
            h.remove()
    return order


def output_layer(module: nn.Module, example: torch.Tensor) -> str | None:
    """The last prunable layer that runs in a forward pass: its outputs are the model's outputs."""
    order = _calls(module, example)
    return order[-1] if order else None


def role(name: str, mark: str = "#") -> str:
    """The layer's name with its block indices replaced: its role in repeated blocks."""
    return BLOCK_INDEX.sub(lambda m: m.group(1) + mark, name)


def describe_layers(module: nn.Module, example: torch.Tensor | None = None) -> list[LayerInfo]:
    """What inspection records, so a recipe's layer names can be checked at submission: each prunable
    layer's width and its role (the output layer; an attention projection and its heads; its place in
    repeated blocks). `example` finds the output layer (one forward pass)."""
    heads = attention_heads(module)
    last = output_layer(module, example) if example is not None else None
    out = []
    for name, m in prunable_layers(module):
        linear = isinstance(m, nn.Linear)
        out.append(
            LayerInfo(
                name=name,
                type="Linear" if linear else type(m).__name__,
                in_=m.in_features if linear else m.in_channels,
                out=m.out_features if linear else m.out_channels,
                output=True if name == last else None,
                heads=heads.get(name),
            )
        )
    # a role in repeated blocks is one several layers share: same place, type and width (a CNN's features.0
    # and features.3 are two layers, every transformer block's q_proj is one role)
    roles: dict[tuple, list[LayerInfo]] = {}
    for layer in out:
        roles.setdefault((role(layer.name), layer.type, layer.in_, layer.out), []).append(layer)
    for (block, *_), members in roles.items():
        for layer in members if len(members) > 1 else []:
            layer.block = block
    return out


def inspect_layers(model: LoadedModel) -> list[LayerInfo] | None:
    """The prunable layers of an uploaded model. Lifts a .pt2 graph in place: call it last."""
    if model.format in EAGER_FORMATS:
        module = editable(model)
        return describe_layers(module, model.input_spec.example(1) if model.input_spec else None)
    return None


QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"))


def attention_heads(module: nn.Module) -> dict[str, int]:
    """The query/key/value projections of multi-head attention blocks that declare their head count
    (Hugging Face's BERT-style `num_attention_heads`, Llama-style `config.num_attention_heads`), by name,
    with that count. Pruning removes whole heads from them (Torch-Pruning's `num_heads`), which the
    blocks' `view(..., -1, head_size)` follows. Grouped-query attention (fewer key/value heads than query
    heads) is left out: removing query heads independently of their key/value head would pair the rest
    with the wrong one, so its projections stay whole and are named."""
    found: dict[str, int] = {}
    for name, block in module.named_modules():
        for names in QKV_NAMES:
            layers = [getattr(block, n, None) for n in names]
            if not all(isinstance(layer, nn.Linear) for layer in layers):
                continue
            config = getattr(block, "config", None)
            heads = getattr(block, "num_attention_heads", None) or getattr(config, "num_attention_heads", None)
            grouped = getattr(block, "num_key_value_groups", 1) != 1
            widths = {layer.out_features for layer in layers}
            if not isinstance(heads, int) or heads < 2 or grouped or len(widths) != 1 or widths.pop() % heads:
                continue
            found.update({f"{name}.{n}" if name else n: heads for n in names})
    return found


def always_kept(
    model: LoadedModel, module: nn.Module, example: torch.Tensor, structured: bool
) -> tuple[set[str], list[str]]:
    """Layers pruning must leave whole, and why: the output layer (its outputs are the model's), and for
    structured pruning of a transformer, the hidden width: every residual branch shares it, so only the
    feed-forward inner width shrinks, and multi-head attention loses whole heads (attention_heads);
    the other attention projections stay whole."""
    kept, notes = set(), []
    if name := output_layer(module, example):
        kept.add(name)
    hidden = _transformer_width(model) if structured else None
    if hidden:
        heads = attention_heads(module)
        kept |= {
            n
            for n, m in prunable_layers(module)
            if isinstance(m, nn.Linear) and m.out_features == hidden and n not in heads
        }
        if heads:
            per_block = sorted(set(heads.values()))
            notes.append(
                f"transformer: the hidden width ({hidden}) is kept; attention loses whole heads (of "
                f"{'/'.join(map(str, per_block))} per block) and feed-forward layers shrink"
            )
        else:
            notes.append(f"transformer: attention and the hidden width ({hidden}) are kept; feed-forward layers shrink")
    return kept, notes


def _transformer_width(model: LoadedModel) -> int | None:
    if model.format not in TRANSFORMERS_FORMATS:
        return None
    config = getattr(getattr(model.module, "model", None), "config", None)
    return getattr(config, "hidden_size", None)


_PERMUTES = {"permute", "transpose", "swapaxes", "movedim"}
_FLATTENS = {"view", "reshape", "_unsafe_view", "flatten", "unflatten"}


def _op_name(node) -> str:
    target = node.target
    if node.op == "call_method":
        return target
    if node.op == "call_function":
        name = getattr(target, "__name__", str(target))  # aten.permute.default -> "permute.default"
        return name.split(".")[0]
    return ""


def _moves_channels(node) -> bool:
    """A permute/transpose that moves dim 1 (channels) elsewhere."""
    name, args = _op_name(node), list(node.args[1:])
    if name == "permute":
        dims = args[0] if args and isinstance(args[0], (list, tuple)) else args
        return len(dims) > 1 and dims[1] != 1
    if name in ("transpose", "swapaxes", "movedim"):
        return 1 in args[:2]
    return False


def permuted_into_flatten(module: nn.Module) -> dict[str, str]:
    """Layers whose output channels are permuted (NCHW -> NHWC) and then flattened before the next layer.

    Torch-Pruning treats a permute as elementwise and maps a removed channel to the wrong columns of the
    Linear after the flatten (channel-major instead of channel-minor): the pruned model runs, and is wrong.
    Those layers are kept whole. Found in the module's fx graph (a lifted .pt2 is one; an eager module is
    traced symbolically, and skipped where it cannot be)."""
    graph_module = module if isinstance(module, torch.fx.GraphModule) else None
    if graph_module is None:
        try:
            graph_module = torch.fx.symbolic_trace(module)
        except Exception:
            return {}
    layers = {name for name, _ in prunable_layers(graph_module)}
    found = {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module" or node.target not in layers:
            continue
        permuted, frontier, seen = None, [(u, False) for u in node.users], set()
        while frontier:
            user, after_permute = frontier.pop()
            if user in seen or (user.op == "call_module" and user.target in layers):
                continue
            seen.add(user)
            if _moves_channels(user):
                after_permute, permuted = True, user
            elif after_permute and _op_name(user) in _FLATTENS:
                found[node.target] = (
                    f"its channels are permuted ({permuted.name}) and flattened ({user.name}) before the next "
                    "layer; removing them would drop the wrong inputs there"
                )
                break
            frontier.extend((u, after_permute) for u in user.users)
    return found
