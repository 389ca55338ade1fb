"""Turns a torch.export graph back into a module tree with real `nn.Conv2d`, `nn.Linear`,
`nn.BatchNorm2d` and `nn.PReLU` layers.

An uploaded .pt2 program is a flat graph of aten calls on weight tensors: there are no layer modules
for Torch-Pruning's dependency graph or for `torch.nn.utils.prune` to act on. Neither library lifts
graphs (Torch-Pruning traces eager modules only), so this does, by hand: each conv / linear / batch-norm
call whose weights are graph attributes becomes a call to a real layer holding the same tensors, at
the weight's own path (`layer1.0.conv1`), so layer names match the original architecture. Everything
else in the graph stays as it was.
"""

from __future__ import annotations

import operator
import types

import torch
from torch import fx, nn

aten = torch.ops.aten
_CONV = {aten.conv1d.default: 1, aten.conv2d.default: 2, aten.conv3d.default: 3}
_BATCH_NORM = {aten.batch_norm.default, aten._native_batch_norm_legit_no_training.default}
_RESHAPE = {aten.view.default, aten.reshape.default, aten._unsafe_view.default}


def lift_layers(graph: fx.GraphModule) -> int:
    """Lifts in place; returns how many layers became modules."""
    lifted = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function":
            continue
        made = None
        if node.target in _CONV or node.target == aten.convolution.default:
            made = _conv(graph, node)
        elif node.target == aten.linear.default:
            made = _linear(graph, node)
        elif node.target in (aten.addmm.default, aten.mm.default):
            made = _matmul(graph, node)
        elif node.target in _BATCH_NORM:
            made = _batch_norm(graph, node)
        elif node.target == aten.prelu.default:
            made = _prelu(graph, node)
        if made is None:
            continue
        name, module, x = made
        _install(graph, name, module)
        with graph.graph.inserting_before(node):
            call = graph.graph.call_module(name, (x,))
        call.meta = dict(node.meta)
        if node.target == aten._native_batch_norm_legit_no_training.default:
            # that op returns (out, mean, rstd); inference graphs read only out, through getitem 0
            for user in list(node.users):
                user.replace_all_uses_with(call)
        else:
            node.replace_all_uses_with(call)
        lifted += 1
    graph.graph.eliminate_dead_code()
    _free_reshapes(graph)
    graph.recompile()
    _drop_unused_attributes(graph)
    # exported graphs refuse train()/eval(): the captured ops ignore the flag, but the lifted layers
    # (batch norm) honour it, which recovery fine-tuning needs
    graph.train = types.MethodType(nn.Module.train, graph)
    graph.eval = types.MethodType(nn.Module.eval, graph)
    return lifted


def _attr(graph: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor a get_attr node reads (a parameter, buffer or constant), or None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = _get(graph, node.target)
    return value if isinstance(value, torch.Tensor) else None


def _get(graph: fx.GraphModule, target: str):
    obj = graph
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def _owner_name(node: fx.Node) -> str:
    # conv1.weight -> conv1: the layer takes the place of the module that held the weight
    return node.target.rpartition(".")[0] or node.target.replace(".", "_") + "_layer"


def _only_used_here(node: fx.Node, user: fx.Node) -> bool:
    return set(node.users) == {user}


def _conv(graph, node):
    if node.target == aten.convolution.default:
        x, w, b, stride, padding, dilation, transposed, _out_pad, groups = node.args
        if transposed:
            return None
        dims = len(stride)
    else:
        args = list(node.args) + [None] * (7 - len(node.args))
        x, w, b, stride, padding, dilation, groups = args
        dims = _CONV[node.target]
        stride, padding, dilation, groups = stride or 1, padding or 0, dilation or 1, groups or 1
    weight, bias = _attr(graph, w), _attr(graph, b) if b is not None else None
    if weight is None or (b is not None and bias is None) or isinstance(padding, str):
        return None
    if not _only_used_here(w, node) or (b is not None and not _only_used_here(b, node)):
        return None
    cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    layer = cls(
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=bias is not None,
    )
    layer.weight = nn.Parameter(weight.detach())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach())
    return _owner_name(w), layer, x


def _linear(graph, node):
    x, w, *rest = node.args
    b = rest[0] if rest else None
    weight, bias = _attr(graph, w), _attr(graph, b) if b is not None else None
    if weight is None or (b is not None and bias is None) or not _only_used_here(w, node):
        return None
    if b is not None and not _only_used_here(b, node):
        return None
    return _owner_name(w), _linear_layer(weight, bias), x


def _linear_layer(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight = nn.Parameter(weight.detach())
    if bias is not None:
        layer.bias = nn.Parameter(bias.detach())
    return layer


def _matmul(graph, node):
    """Decomposed linear: addmm(bias, x, t(weight)) or mm(x, t(weight))."""
    if node.target == aten.addmm.default:
        if len(node.args) != 3 or node.kwargs:  # beta/alpha scale the terms: not a plain linear layer
            return None
        b, x, wt = node.args
    else:
        (x, wt), b = node.args, None
    transposed = isinstance(wt, fx.Node) and (
        wt.target == aten.t.default or (wt.target == aten.permute.default and list(wt.args[1]) == [1, 0])
    )
    if not transposed or not _only_used_here(wt, node):
        return None
    w = wt.args[0]
    weight, bias = _attr(graph, w), _attr(graph, b) if b is not None else None
    if weight is None or weight.ndim != 2 or (b is not None and (bias is None or bias.ndim != 1)):
        return None
    if not _only_used_here(w, wt) or (b is not None and not _only_used_here(b, node)):
        return None
    return _owner_name(w), _linear_layer(weight, bias), x


def _batch_norm(graph, node):
    if node.target == aten.batch_norm.default:
        x, w, b, mean, var, training, momentum, eps, _cudnn = node.args
        if training:
            return None
    else:
        x, w, b, mean, var, momentum, eps = node.args
        if any(u.target is not operator.getitem or (u.args[1] != 0 and u.users) for u in node.users):
            return None
    tensors = [_attr(graph, t) for t in (w, b, mean, var)]
    if any(t is None for t in tensors) or not all(_only_used_here(t, node) for t in (w, b, mean, var)):
        return None
    rank = x.meta["val"].ndim if "val" in x.meta else 4
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}.get(rank)
    if cls is None:
        return None
    weight, bias, running_mean, running_var = tensors
    layer = cls(weight.shape[0], eps=eps, momentum=momentum)
    layer.weight, layer.bias = nn.Parameter(weight.detach()), nn.Parameter(bias.detach())
    layer.running_mean.copy_(running_mean)
    layer.running_var.copy_(running_var)
    layer.eval()
    return _owner_name(w), layer, x


def _prelu(graph, node):
    """PReLU's per-channel slopes are coupled to the channels before them: as a graph tensor Torch-Pruning
    would not see them, as an `nn.PReLU` it prunes them with the channels."""
    x, w = node.args
    weight = _attr(graph, w)
    if weight is None or weight.ndim != 1 or not _only_used_here(w, node):
        return None
    layer = nn.PReLU(num_parameters=weight.shape[0])
    layer.weight = nn.Parameter(weight.detach())
    return _owner_name(w), layer, x


def _install(graph: fx.GraphModule, name: str, layer: nn.Module) -> None:
    owner_path, _, leaf = name.rpartition(".")
    owner = graph.get_submodule(owner_path) if owner_path else graph
    # the place holds a plain container of the layer's tensors (or nothing): the layer replaces it
    if getattr(owner, leaf, None) is not None:
        delattr(owner, leaf)
    setattr(owner, leaf, layer)


def _free_reshapes(graph: fx.GraphModule) -> None:
    """A decomposed `flatten` is `view(x, [batch, 512])`: the constant would break once channels are
    removed. Where the shape is the (symbolic) batch and one constant, the constant becomes -1."""
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target in _RESHAPE and len(node.args) == 2:
            shape = list(node.args[1])
            consts = [i for i, d in enumerate(shape) if isinstance(d, int)]
            if len(shape) == 2 and len(consts) == 1 and consts[0] == 1 and isinstance(shape[0], fx.Node):
                shape[1] = -1
                node.args = (node.args[0], shape)


def _drop_unused_attributes(graph: fx.GraphModule) -> None:
    used = {n.target for n in graph.graph.nodes if n.op in ("get_attr", "call_module")}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name in used or any(name.startswith(u + ".") for u in used):
            continue
        owner, _, leaf = name.rpartition(".")
        module = graph.get_submodule(owner) if owner else graph
        if leaf in module._parameters:
            del module._parameters[leaf]
        elif leaf in module._buffers:
            del module._buffers[leaf]
