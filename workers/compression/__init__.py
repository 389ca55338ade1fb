"""The compression engine: a pure PyTorch library (no web server, no database).

    from workers.compression import run_recipe
    report = run_recipe("model.pt2", {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
                        data_path="digits.npz", out_dir="out/")

Exports resolve lazily: errors, format detection, recipes and the catalogue are torch-free (the API
process uses them); everything else imports PyTorch on first use.
"""

from ._lazy import lazy_exports

_EXPORTS = {
    "EngineError": "errors",
    "InvalidDatasetError": "errors",
    "InvalidModelError": "errors",
    "RecipeError": "errors",
    "StepFailedError": "errors",
    "UnsupportedFormatError": "errors",
    "ModelFormat": "formats",
    "detect_format": "formats",
    "InputSpec": "formats",
    "LoadedModel": "formats",
    "load_model": "formats",
    "save_model": "formats",
    "Dataset": "data",
    "load_dataset": "data",
    "Measurement": "measure",
    "MeasureSettings": "measure",
    "measure_models": "measure",
    "METHODS": "steps",
    "catalogue": "steps",
    "Recipe": "recipe",
    "parse_recipe": "recipe",
    "LoadOptions": "pipeline",
    "run_recipe": "pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
