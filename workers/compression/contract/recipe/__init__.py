"""The recipe: typed step configs (one module per method), the registry of what each method accepts,
and parsing and checking a whole recipe. Torch-free."""

from .auto import AutoStep
from .distill import Derive, DistillStep, FeaturePair, Student
from .export import ExportStep
from .parse import Recipe, Step, check_recipe, describe_validation_error, parse_recipe, parse_step
from .prune import PruneStep
from .quantize import QuantizeConfig, QuantizeStep, quantize_step
from .registry import METHODS, Method, catalogue

__all__ = [
    "METHODS",
    "AutoStep",
    "Derive",
    "DistillStep",
    "ExportStep",
    "FeaturePair",
    "Method",
    "PruneStep",
    "QuantizeConfig",
    "QuantizeStep",
    "Recipe",
    "Step",
    "Student",
    "catalogue",
    "check_recipe",
    "describe_validation_error",
    "parse_recipe",
    "parse_step",
    "quantize_step",
]
