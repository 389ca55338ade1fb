"""The verbs: one module per method, each `verb(model, step, ctx) -> StepResult`. The registry that
names them, with their configs, is `workers.compression.steps` (torch-free)."""

from ..steps import METHODS, Method, catalogue
from .base import StepContext, StepResult

__all__ = ["METHODS", "Method", "StepContext", "StepResult", "catalogue"]
