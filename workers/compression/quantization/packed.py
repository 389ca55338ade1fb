"""Low-bit weights stored packed (formats/packed.py): int8 / int4 codes with per-channel or per-group
scales (weight-only schemes), and binary / ternary weights at 1 / 2 bits with a per-output-channel
scale. Each module's forward rebuilds the fp32 weight; the loader folds that once.

The quantization arithmetic is a few lines of symmetric rounding. torchao's `Int8WeightOnlyConfig`
tensors are saved by pickling and `Int4WeightOnlyConfig` needs the `mslk` CUDA kernels, so neither yields a
.pt2 this service can load safely on a CPU worker; the arithmetic below matches their symmetric
per-group scheme."""

from __future__ import annotations

import torch
from torch import nn

from ..formats.packed import QUANT_CODES, QUANT_NONZERO, QUANT_SCALE, QUANT_SIGNS, pack_bits, unpack_bits


def _groups(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(out, groups, group_size) view of the weight flattened per output channel."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    size = flat.shape[1] if group_size is None or group_size >= flat.shape[1] else group_size
    if flat.shape[1] % size:
        raise ValueError(f"group_size {group_size} does not divide the {flat.shape[1]} inputs of a layer")
    return flat.view(flat.shape[0], -1, size)


class IntWeight(nn.Module):
    """Symmetric int8 or int4 codes, one fp32 scale per output channel (or per group of inputs).
    int4 codes are offset by 8 and packed two per byte."""

    def __init__(self, weight: torch.Tensor, bits: int, group_size: int | None):
        super().__init__()
        qmax = 2 ** (bits - 1) - 1
        groups = _groups(weight, group_size)
        scale = groups.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
        codes = torch.round(groups / scale).clamp(-qmax - 1, qmax).to(torch.int8)
        if bits == 4:
            nibbles = (codes.flatten() + 8).to(torch.uint8)
            nibbles = torch.nn.functional.pad(nibbles, (0, nibbles.numel() % 2))
            codes = nibbles[0::2] | (nibbles[1::2] << 4)
        self.register_buffer(QUANT_CODES, codes)
        self.register_buffer(QUANT_SCALE, scale.float())
        self.bits, self.shape, self.grouped = bits, tuple(weight.shape), tuple(groups.shape)

    def forward(self) -> torch.Tensor:
        codes = getattr(self, QUANT_CODES)
        if self.bits == 4:
            low, high = (codes & 15).to(torch.int8) - 8, (codes >> 4).to(torch.int8) - 8
            codes = torch.stack([low, high], 1).flatten()[: self.grouped[0] * self.grouped[1] * self.grouped[2]]
        return (codes.view(self.grouped).float() * getattr(self, QUANT_SCALE)).view(self.shape)


def sign_codes(weight: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary (levels=2): sign(W) with scale mean|W| per output channel. Ternary (levels=3): W with
    |W| below 0.7·mean|W| set to 0, the rest sign(W), scale the mean |W| of the kept weights (the
    ternary-weight-networks rule). Returns (codes in {-1, 0, 1}, scale of shape (out, 1))."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    mean = flat.abs().mean(1, keepdim=True)
    if levels == 2:
        return torch.where(flat >= 0, 1.0, -1.0), mean.clamp(min=1e-12)
    keep = flat.abs() > 0.7 * mean
    codes = torch.sign(flat) * keep
    scale = (flat.abs() * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp(min=1)
    return codes, scale.clamp(min=1e-12)


class SignWeight(nn.Module):
    """Binary weights at 1 bit (the sign) or ternary at 2 bits (non-zero mask + sign), times a
    per-output-channel scale."""

    def __init__(self, weight: torch.Tensor, levels: int):
        super().__init__()
        codes, scale = sign_codes(weight, levels)
        self.register_buffer(QUANT_SIGNS, pack_bits(codes < 0))
        if levels == 3:
            self.register_buffer(QUANT_NONZERO, pack_bits(codes != 0))
        self.register_buffer(QUANT_SCALE, scale.float())
        self.levels, self.shape, self.numel = levels, tuple(weight.shape), weight.numel()

    def forward(self) -> torch.Tensor:
        negative = unpack_bits(getattr(self, QUANT_SIGNS), self.numel)
        codes = 1.0 - 2.0 * negative.float()
        if self.levels == 3:
            codes = codes * unpack_bits(getattr(self, QUANT_NONZERO), self.numel).float()
        return (codes.view(self.shape[0], -1) * getattr(self, QUANT_SCALE)).view(self.shape)


class SignSTE(nn.Module):
    """Straight-through estimator for fine-tuning binary/ternary layers: the forward pass sees the
    quantized weight, the gradient flows to the latent fp32 weight as if quantization were the identity.
    Registered as a parametrization of the layer's weight."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = levels

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        codes, scale = sign_codes(weight, self.levels)
        quantized = (codes * scale).view(weight.shape)
        return weight + (quantized - weight).detach()


def packed_layer_bytes(module: nn.Module) -> dict:
    """Bytes the quantized layers' weights take: as fp32, and as stored (codes, bits and scales)."""
    fp32 = stored = layers = 0
    for m in module.modules():
        if isinstance(m, (IntWeight, SignWeight)):
            layers += 1
            fp32 += 4 * int(torch.Size(m.shape).numel())
            stored += sum(b.nbytes for b in m.buffers())
    return {"layers": layers, "fp32_bytes": fp32, "stored_bytes": stored, "ratio": fp32 / stored if stored else None}


def pack_embeddings(
    model: nn.Module, bits: int = 8, group_size: int | None = None, shared: dict[int, nn.Module] | None = None
) -> list[str]:
    """Stores every embedding table as int8 (or int4) rows with a scale each. The int8 quantizers and
    weight-only schemes cover Linear and Conv; in a language model the token table is often the largest
    tensor (8 MB of a 20 MB BERT-like encoder), so leaving it fp32 would leave the file barely smaller.
    Lookups read the table rebuilt at load. `shared` maps id(weight) to the packed weight of a layer
    already packed: a table tied to a language model's output layer is stored once. Returns the names packed."""
    from ..formats.packed import replace_weight

    names = [name for name, m in model.named_modules() if isinstance(m, nn.Embedding) and name]
    for name in names:
        weight = model.get_submodule(name).weight
        group = group_size if group_size is not None and weight.shape[1] % group_size == 0 else None
        packed = shared.get(id(weight)) if shared is not None else None  # a table tied to the output layer
        replace_weight(model, name, packed if packed is not None else IntWeight(weight, bits, group))
    return names
