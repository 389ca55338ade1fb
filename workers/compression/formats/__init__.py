"""Model formats: detect from bytes, load into a runnable module, save to a file.

Exports resolve lazily: `kinds` and `detect` are torch-free; the rest imports PyTorch on first use."""

from .._lazy import lazy_exports

_EXPORTS = {
    "ACCEPTED_FORMATS_TEXT": "kinds",
    "FILE_SUFFIX": "kinds",
    "ModelFormat": "kinds",
    "PICKLE_REFUSAL": "detect",
    "classify_zip": "detect",
    "detect_format": "detect",
    "InputSpec": "spec",
    "LoadedModel": "spec",
    "export_program": "exported",
    "save_pt2": "exported",
    "OnnxModule": "onnx",
    "build_architecture": "weights",
    "save_weights": "weights",
    "load_model": "loading",
    "save_model": "loading",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
