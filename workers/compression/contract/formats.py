"""The accepted model formats, by name. Torch-free, so the API process can sniff uploads and validate
recipes without importing PyTorch."""

from __future__ import annotations

from enum import StrEnum


class ModelFormat(StrEnum):
    PT2 = "pt2"  # torch.export program
    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"
    SAFETENSORS = "safetensors"  # weights + an architecture name
    HUGGINGFACE = "huggingface"  # zipped config.json + *.safetensors


# formats whose layers PyTorch can change and train (a .pt2's graph is lifted back into layers)
EAGER_FORMATS = frozenset({ModelFormat.PT2, ModelFormat.SAFETENSORS, ModelFormat.HUGGINGFACE})

FILE_SUFFIX = {
    ModelFormat.PT2: ".pt2",
    ModelFormat.TORCHSCRIPT: ".torchscript.pt",
    ModelFormat.ONNX: ".onnx",
    ModelFormat.SAFETENSORS: ".safetensors",
    ModelFormat.HUGGINGFACE: ".zip",
}

ACCEPTED_FORMATS_TEXT = (
    "a torch.export program (.pt2, torch.export.save), a TorchScript archive (torch.jit.save), "
    "an ONNX model, safetensors weights with an architecture name (torchvision or timm), "
    "or a zipped Hugging Face checkpoint (config.json + *.safetensors)"
)
