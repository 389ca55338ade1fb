"""The accepted model formats, by name. Torch-free, so the API process can sniff uploads and validate
recipes without importing PyTorch."""

from __future__ import annotations

from enum import StrEnum

from .vocabulary import Runtime


class ModelFormat(StrEnum):
    PT2 = "pt2"  # torch.export program
    TORCHSCRIPT = "torchscript"
    ONNX = "onnx"
    SAFETENSORS = "safetensors"  # weights + an architecture name
    HUGGINGFACE = "huggingface"  # zipped config.json + *.safetensors
    OPENVINO = "openvino"  # OpenVINO IR, zipped: model.xml + model.bin (what OpenVINO artifacts are)
    GGUF = "gguf"  # llama.cpp's file of a language model (weights and tokenizer), read into a Hugging Face model


# formats whose layers PyTorch can change and train (a .pt2's graph is lifted back into layers)
EAGER_FORMATS = frozenset({ModelFormat.PT2, ModelFormat.SAFETENSORS, ModelFormat.HUGGINGFACE, ModelFormat.GGUF})
# formats whose layers can be pruned or narrowed into a student: the eager ones, and ONNX graphs converted into
# PyTorch layers (formats/onnx_torch.py)
EDITABLE_FORMATS = EAGER_FORMATS | {ModelFormat.ONNX}
# formats loaded as a transformers model (its config, its named inputs, its tokenizer)
TRANSFORMERS_FORMATS = frozenset({ModelFormat.HUGGINGFACE, ModelFormat.GGUF})

FILE_SUFFIX = {
    ModelFormat.PT2: ".pt2",
    ModelFormat.TORCHSCRIPT: ".torchscript.pt",
    ModelFormat.ONNX: ".onnx",
    ModelFormat.SAFETENSORS: ".safetensors",
    ModelFormat.HUGGINGFACE: ".zip",
    ModelFormat.OPENVINO: ".openvino.zip",
    ModelFormat.GGUF: ".gguf",
}

ACCEPTED_FORMATS_TEXT = (
    "a torch.export program (.pt2, torch.export.save), a TorchScript archive (torch.jit.save), "
    "an ONNX model, safetensors weights with an architecture name (torchvision or timm), "
    "a zipped Hugging Face checkpoint (config.json + *.safetensors), a language model as GGUF (.gguf, llama.cpp's "
    "format), or OpenVINO IR zipped as model.xml + model.bin"
)


# how to run an artifact, by its format and the runtime the job measured it on: shown beside its download
HOW_TO_RUN = {
    ModelFormat.PT2: (
        "import torch\n"
        "program = torch.export.load('{file}')\n"
        "y = program.module()(x)"
    ),
    "pt2-inductor": (
        "import torch, torch.ao.quantization.fx._decomposed\n"
        "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # int8 lowering passes\n"
        "torch._inductor.config.freezing = True\n"
        "model = torch.compile(torch.export.load('{file}').module())\n"
        "with torch.no_grad():\n"
        "    y = model(x)"
    ),
    ModelFormat.ONNX: (
        "import onnxruntime as ort\n"
        "session = ort.InferenceSession('{file}')\n"
        "y = session.run(None, {{session.get_inputs()[0].name: x}})[0]"
    ),
    ModelFormat.OPENVINO: (
        "import zipfile, numpy as np, openvino as ov\n"
        "with zipfile.ZipFile('{file}') as z:\n"
        "    model = ov.Core().read_model(z.read('model.xml').decode(), ov.Tensor(np.frombuffer(z.read('model.bin'), np.uint8)))\n"
        "compiled = ov.Core().compile_model(model, 'CPU')\n"
        "y = compiled(x)[0]"
    ),
    ModelFormat.TORCHSCRIPT: (
        "import torch\n"
        "model = torch.jit.load('{file}')\n"
        "y = model(x)"
    ),
}


def how_to_run(fmt: ModelFormat | str, runtime: str | None, file: str) -> str:
    """A few lines of Python that run the artifact `file` as the job measured it (x: a batch of inputs)."""
    key = "pt2-inductor" if fmt == ModelFormat.PT2 and runtime == Runtime.INDUCTOR else ModelFormat(fmt)
    return HOW_TO_RUN.get(key, "").format(file=file)
