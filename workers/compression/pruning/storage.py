"""Sparse weights that make the file smaller: each pruned weight tensor is stored as a bitmask of its
non-zeros (1 bit per weight) plus the non-zero values, and rebuilt inside the graph (formats/packed.py).

Dense kernels do not run faster on zeros, but a dense file of zeros is as big as the original; this
encoding makes a .pt2 shrink with the sparsity (90 % sparse: about 7.6x smaller).
"""

from __future__ import annotations

import torch
from torch import nn

from ..formats.packed import SPARSE_BITS as BITS
from ..formats.packed import SPARSE_SHAPE as SHAPE
from ..formats.packed import SPARSE_VALUES as VALUES
from ..formats.packed import pack_bits, replace_weight, unpack_bits

__all__ = ["BITS", "SHAPE", "VALUES", "PackedSparse", "pack_bits", "pack_sparse_layers", "unpack_bits"]


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


def pack_sparse_layers(model: nn.Module, names: list[str]) -> int:
    """Replaces the named Linear/Conv layers by packed-sparse ones where that saves bytes; returns how many."""
    packed = 0
    for name in names:
        layer = model.get_submodule(name)
        density = float((layer.weight != 0).float().mean())
        if density * 32 + 1 >= 32:  # bitmask (1 bit) + values (32 bits each) would not beat 32 bits per weight
            continue
        replace_weight(model, name, PackedSparse(layer.weight))
        packed += 1
    return packed
