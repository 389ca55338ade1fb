"""Weights stored smaller than fp32 inside a plain .pt2 program: a layer's weight is held as packed
buffers (bitmasks, int8/int4 codes, scales) and rebuilt inside the graph, so any PyTorch loads the file
without this code, no pickle involved. The engine folds the rebuild away once at load
(`fold_packed_weights`), so running it costs what the dense model costs.

Used by sparse pruning (pruning/storage.py) and by low-bit weight quantization (quantization/packed.py).
torch's sparse layouts and torchao's tensor subclasses cannot be saved as plain program constants
(torchao's are pickled, which the loader refuses), hence this hand-written encoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# every buffer name a packed weight uses; the loader and the measurement recognise them by these suffixes
SPARSE_BITS, SPARSE_VALUES, SPARSE_SHAPE = "sparse_bits", "sparse_values", "sparse_shape"
QUANT_CODES, QUANT_SCALE, QUANT_SIGNS, QUANT_NONZERO = (
    "qweight_codes",
    "qweight_scale",
    "qweight_signs",
    "qweight_nonzero",
)
PACKED_BUFFERS = (SPARSE_BITS, SPARSE_VALUES, SPARSE_SHAPE, QUANT_CODES, QUANT_SCALE, QUANT_SIGNS, QUANT_NONZERO)
_BIT_WEIGHTS = 2 ** torch.arange(8, dtype=torch.uint8)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.flatten().to(torch.uint8)
    flat = F.pad(flat, (0, (-flat.numel()) % 8))
    return (flat.view(-1, 8) * _BIT_WEIGHTS).sum(1, dtype=torch.uint8)


def unpack_bits(bits: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=bits.device)
    return ((bits.unsqueeze(1) >> shifts) & 1).flatten()[:numel].bool()


class StoredLinear(nn.Module):
    """A Linear layer whose weight comes from a module that rebuilds it (a packed weight)."""

    def __init__(self, layer: nn.Linear, weight: nn.Module):
        super().__init__()
        self.weight = weight
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)


class StoredConv(nn.Module):
    def __init__(self, layer: nn.modules.conv._ConvNd, weight: nn.Module):
        super().__init__()
        self.layer = layer
        self.weight = weight
        del layer.weight  # the packed copy replaces it; _conv_forward takes the weight as an argument

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer._conv_forward(x, self.weight(), self.layer.bias)


class StoredEmbedding(nn.Module):
    def __init__(self, layer: nn.Embedding, weight: nn.Module):
        super().__init__()
        self.weight = weight
        self.padding_idx = layer.padding_idx

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight(), self.padding_idx)


def replace_weight(model: nn.Module, name: str, weight: nn.Module) -> None:
    """Swaps the Linear/Conv/Embedding layer `name` for one that reads its weight from `weight`."""
    layer = model.get_submodule(name)
    if isinstance(layer, nn.Embedding):
        stored = StoredEmbedding(layer, weight)
    else:
        stored = StoredLinear(layer, weight) if isinstance(layer, nn.Linear) else StoredConv(layer, weight)
    owner, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, leaf, stored)


def is_packed(module: nn.Module) -> bool:
    return any(name.endswith(PACKED_BUFFERS) for name, _ in module.named_buffers())


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
        if name.endswith(PACKED_BUFFERS) and name not in used:
            owner, _, leaf = name.rpartition(".")
            del graph.get_submodule(owner)._buffers[leaf]
    return len(frontier)


def _constant_call(node: torch.fx.Node, const: set) -> bool:
    if node.all_input_nodes:
        return all(a in const for a in node.all_input_nodes)
    # no tensor inputs: a factory such as zeros() is constant, a random one is not
    tags = getattr(node.target, "tags", None)
    return tags is not None and torch.Tag.nondeterministic_seeded not in tags
