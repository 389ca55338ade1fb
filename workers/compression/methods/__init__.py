"""The verbs: one module per method, each `verb(model, step, ctx) -> StepOutput`, found by the type of
the step's config (the contract's recipe), as torchao finds a quantization's handler by its config."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from pydantic import BaseModel

from ..contract.recipe import AutoStep, DistillStep, ExportStep, PruneStep, QuantizeConfig
from ..step import StepContext, StepOutput

# imported on first use: each verb pulls in its own toolkit (torchao, Torch-Pruning, onnxruntime), and the
# search (auto) calls the other verbs
_VERBS: dict[type[BaseModel], str] = {
    QuantizeConfig: "quantize:quantize",
    PruneStep: "prune:prune",
    DistillStep: "distill:distill",
    ExportStep: "export:export",
    AutoStep: "auto:auto",
}


def _module_of(step: BaseModel) -> tuple[object, str]:
    for config, where in _VERBS.items():
        if isinstance(step, config):
            module, function = where.split(":")
            return importlib.import_module(f".{module}", __name__), function
    raise TypeError(f"no verb for {type(step).__name__}")


def verb_for(step: BaseModel) -> Callable[..., StepOutput]:
    module, function = _module_of(step)
    return getattr(module, function)


def report_entry_for(step: BaseModel) -> Callable | None:
    """The method's own report entry (`report_entry(step, base, measured, batch)` in its verb module), when
    its step reports more than its artifacts and their runtimes; None for the default entry."""
    module, _ = _module_of(step)
    return getattr(module, "report_entry", None)


def run_step(model, step: BaseModel, ctx: StepContext) -> StepOutput:
    return verb_for(step)(model, step, ctx)


__all__ = ["StepContext", "StepOutput", "report_entry_for", "run_step", "verb_for"]
