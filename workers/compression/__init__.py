"""The compression engine: a pure PyTorch library (no web server, no database).

    from workers.compression import run_recipe
    report = run_recipe("model.pt2", {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
                        data_path="digits.npz", out_dir="out/")

Exports resolve lazily: errors, format detection, recipes, the report and the catalogue are the
torch-free contract (`contract/`, which the API process uses); everything else imports PyTorch on first
use.
"""

from ._lazy import lazy_exports

_EXPORTS = {
    "EngineError": "contract.errors",
    "InvalidDatasetError": "contract.errors",
    "InvalidModelError": "contract.errors",
    "RecipeError": "contract.errors",
    "StepFailedError": "contract.errors",
    "UnsupportedFormatError": "contract.errors",
    "ModelFormat": "contract.formats",
    "detect_format": "contract.sniff",
    "InputSpec": "formats",
    "LoadedModel": "formats",
    "load_model": "formats",
    "save_model": "formats",
    "Dataset": "data",
    "load_dataset": "data",
    "Measurement": "contract.measure",
    "MeasureSettings": "contract.measure",
    "measure_models": "measure",
    "METHODS": "contract.recipe",
    "catalogue": "contract.recipe",
    "Recipe": "contract.recipe",
    "parse_recipe": "contract.recipe",
    "LoadOptions": "contract.load",
    "Report": "contract.report",
    "run_recipe": "pipeline",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
