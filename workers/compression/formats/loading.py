"""Load any accepted format into a runnable module; save a module to a file."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..contract.errors import InvalidModelError
from ..contract.sniff import detect_format
from .exported import load_pt2, save_pt2
from .huggingface import load_gguf, load_huggingface
from .onnx import load_onnx, save_onnx
from .openvino import from_onnx, load_openvino, save_openvino
from .spec import InputSpec, LoadedModel, ModelFormat
from .torchscript import load_torchscript, save_torchscript
from .weights import load_weights


def load_model(
    path: str | Path,
    *,
    format: ModelFormat | str | None = None,
    input_shape: tuple[int, ...] | list[int] | None = None,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> LoadedModel:
    """Loads any accepted format. `format` is checked against the bytes, never trusted alone."""
    path = Path(path)
    detected = detect_format(path)
    if format is not None and ModelFormat(format) != detected:
        raise InvalidModelError(f"the file was declared {format} but its bytes are {detected}")
    shape = tuple(int(d) for d in input_shape) if input_shape else None
    match detected:
        case ModelFormat.PT2:
            model = load_pt2(path)
        case ModelFormat.TORCHSCRIPT:
            spec = InputSpec(shape=(None, *shape[1:])) if shape else None
            model = load_torchscript(path, spec)
        case ModelFormat.ONNX:
            model = load_onnx(path, threads=threads, device=device)
        case ModelFormat.SAFETENSORS:
            model = load_weights(path, arch=arch, arch_kwargs=arch_kwargs, input_shape=shape)
        case ModelFormat.HUGGINGFACE:
            model = load_huggingface(path, sequence_length=shape[1] if shape else None)
        case ModelFormat.GGUF:
            model = load_gguf(path, sequence_length=shape[1] if shape else None)
        case ModelFormat.OPENVINO:
            model = load_openvino(path, threads=threads)
    if shape and model.input_spec is not None and detected in (ModelFormat.PT2, ModelFormat.ONNX, ModelFormat.OPENVINO):
        _check_declared_shape(model.input_spec, shape)
        model.input_spec = model.input_spec.sized(shape[1:])  # a dynamic height/width/length, said by the user
    return model


def _check_declared_shape(spec: InputSpec, shape: tuple[int, ...]) -> None:
    fixed = [(a, b) for a, b in zip(spec.sample_shape, shape[1:]) if a is not None]
    if len(spec.shape) != len(shape) or any(a != b for a, b in fixed):
        raise InvalidModelError(f"input_shape {list(shape)} does not match the model's input {list(spec.shape)}")


def save_model(module: nn.Module, spec: InputSpec, format: ModelFormat, path: str | Path) -> Path:
    path = Path(path)
    match ModelFormat(format):
        case ModelFormat.PT2:
            return save_pt2(module, spec, path)
        case ModelFormat.TORCHSCRIPT:
            return save_torchscript(module, spec, path)
        case ModelFormat.ONNX:
            return save_onnx(module, spec, path)
        case ModelFormat.OPENVINO:
            return save_openvino_from(module, spec, path)
    raise InvalidModelError(f"saving to {format} is not supported; choose pt2, onnx, torchscript or openvino")


def save_openvino_from(module: nn.Module, spec: InputSpec, path: Path) -> Path:
    """OpenVINO IR (fp32) of a module or of a loaded ONNX model: through its ONNX form, converted by OpenVINO."""
    import tempfile

    source = getattr(module, "model_path", None)  # an ONNX model is converted as it is
    with tempfile.TemporaryDirectory(prefix="squeeze-ov-") as folder:
        onnx_path = Path(source) if source else save_onnx(module, spec, Path(folder) / "model.onnx")
        return save_openvino(from_onnx(onnx_path), path)
