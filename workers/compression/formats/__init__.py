"""Model formats: detect from bytes, load into a runnable module, save to a file.

Exports resolve lazily: the format names and the sniffing come from the torch-free contract; the rest
imports PyTorch on first use."""

from .._lazy import lazy_exports

_EXPORTS = {
    "ACCEPTED_FORMATS_TEXT": ".contract.formats",
    "FILE_SUFFIX": ".contract.formats",
    "ModelFormat": ".contract.formats",
    "PICKLE_REFUSAL": ".contract.sniff",
    "classify_zip": ".contract.sniff",
    "detect_format": ".contract.sniff",
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
