"""The compression engine: a pure PyTorch library (no web server, no database).

    from workers.compression import run_recipe
    report = run_recipe("model.pt2", {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]},
                        data_path="digits.npz", out_dir="out/")
"""

from .data import Dataset, load_dataset
from .errors import (
    EngineError,
    InvalidDatasetError,
    InvalidModelError,
    RecipeError,
    StepFailedError,
    UnsupportedFormatError,
)
from .formats import InputSpec, LoadedModel, ModelFormat, detect_format, load_model, save_model
from .measure import Measurement, MeasureSettings, measure_models
from .methods import METHODS, catalogue
from .pipeline import LoadOptions, run_recipe
from .recipe import Recipe, parse_recipe

__all__ = [
    "METHODS",
    "Dataset",
    "EngineError",
    "InputSpec",
    "InvalidDatasetError",
    "InvalidModelError",
    "LoadOptions",
    "LoadedModel",
    "MeasureSettings",
    "Measurement",
    "ModelFormat",
    "Recipe",
    "RecipeError",
    "StepFailedError",
    "UnsupportedFormatError",
    "catalogue",
    "detect_format",
    "load_dataset",
    "load_model",
    "measure_models",
    "parse_recipe",
    "run_recipe",
    "save_model",
]
