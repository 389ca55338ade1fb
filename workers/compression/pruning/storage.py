"""Sparse weights that make the file smaller: each pruned weight tensor is stored as a bitmask of its
non-zeros (1 bit per weight) plus the non-zero values, and rebuilt inside the graph at run time.

Dense kernels do not run faster on zeros, but a dense file of zeros is as big as the original; this
encoding makes a .pt2 shrink with the sparsity (90 % sparse: about 7.6x smaller) while staying a plain
torch.export program that any PyTorch loads without this code. torch's sparse tensor layouts cannot be
exported as program constants, hence the hand-written encoding. The rebuild costs a little time per
call; the measurement shows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# the buffer names the measurement recognises (measure/metrics.py counts these as one dense tensor)
BITS, VALUES, SHAPE = "sparse_bits", "sparse_values", "sparse_shape"
_BIT_WEIGHTS = 2 ** torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.flatten().to(torch.uint8)
    flat = F.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(1) >> shifts) & 1).flatten()[:numel].bool()


class PackedSparse(nn.Module):
    """A weight tensor as bitmask + non-zero values; calling it returns the dense tensor."""

    def __init__(self, dense: torch.Tensor):
        super().__init__()
        dense = dense.detach()
        mask = dense != 0
        self.register_buffer(BITS, pack_bits(mask))
        self.register_buffer(VALUES, dense[mask].clone())
        self.register_buffer(SHAPE, torch.tensor(dense.shape, dtype=torch.int64))
        self.shape = tuple(dense.shape)
        self.numel = dense.numel()

    def forward(self) -> torch.Tensor:
        mask = unpack_bits(getattr(self, BITS), self.numel)
        values = getattr(self, VALUES)
        return (
            torch.zeros(self.numel, dtype=values.dtype, device=values.device)
            .masked_scatter(mask, values)
            .view(self.shape)
        )


class SparseLinear(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.weight = PackedSparse(layer.weight)
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class SparseConv(nn.Module):
    def __init__(self, layer: nn.modules.conv._ConvNd):
        super().__init__()
        self.layer = layer
        self.weight = PackedSparse(layer.weight)
        del layer.weight  # the packed copy replaces it; _conv_forward takes the weight as an argument

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer._conv_forward(x, self.weight(), self.layer.bias)


def pack_sparse_layers(model: nn.Module, names: list[str]) -> int:
    """Replaces the named Linear/Conv layers by packed-sparse ones where that saves bytes; returns how many."""
    packed = 0
    for name in names:
        layer = model.get_submodule(name)
        density = float((layer.weight != 0).float().mean())
        if density * 32 + 1 >= 32:  # bitmask (1 bit) + values (32 bits each) would not beat 32 bits per weight
            continue
        wrapped = SparseLinear(layer) if isinstance(layer, nn.Linear) else SparseConv(layer)
        owner, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, leaf, wrapped)
        packed += 1
    return packed


def is_packed(module: nn.Module) -> bool:
    return any(name.endswith(BITS) for name, _ in module.named_buffers())


def fold_packed_weights(graph: torch.fx.GraphModule) -> int:
    """Rebuilds packed weights once, at load, instead of on every call: every computation in the graph
    that reads only stored tensors (the unpacking) is evaluated now and replaced by its result.
    torch's `const_fold.split_const_subgraphs` does the same but returns a module whose outputs lose
    their structure (a tuple instead of a tensor), so this small pass keeps the graph as it is.
    Returns how many tensors were folded."""
    from torch.fx.node import map_arg

    const: set[torch.fx.Node] = set()
    values: dict[torch.fx.Node, object] = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr":
            obj = graph
            for part in node.target.split("."):
                obj = getattr(obj, part)
            const.add(node)
            values[node] = obj
        elif node.op == "call_function" and _constant_call(node, const):
            const.add(node)
            values[node] = node.target(*map_arg(node.args, values.get), **map_arg(node.kwargs, values.get))
    frontier = [
        n
        for n in const
        if n.op == "call_function" and isinstance(values[n], torch.Tensor) and any(u not in const for u in n.users)
    ]
    for i, node in enumerate(frontier):
        name = f"folded_weight_{i}"
        graph.register_buffer(name, values[node].detach().contiguous())
        with graph.graph.inserting_before(node):
            replacement = graph.graph.get_attr(name)
        node.replace_all_uses_with(replacement)
    for node in reversed(list(graph.graph.nodes)):
        if node in const and not node.users and node.op == "call_function":
            graph.graph.erase_node(node)
    for node in list(graph.graph.nodes):
        if node.op == "get_attr" and not node.users:
            graph.graph.erase_node(node)
    graph.recompile()
    used = {n.target for n in graph.graph.nodes if n.op == "get_attr"}
    for name, _ in list(graph.named_buffers()):
        if name.endswith((BITS, VALUES, SHAPE)) and name not in used:
            owner, _, leaf = name.rpartition(".")
            del graph.get_submodule(owner)._buffers[leaf]
    return len(frontier)


def _constant_call(node: torch.fx.Node, const: set) -> bool:
    if node.all_input_nodes:
        return all(a in const for a in node.all_input_nodes)
    # no tensor inputs: a factory such as zeros() is constant, a random one is not
    tags = getattr(node.target, "tags", None)
    return tags is not None and torch.Tag.nondeterministic_seeded not in tags
