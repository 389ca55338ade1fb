"""The method registry: each recipe method, its typed step config, the formats it takes, and where its
verb lives. Torch-free (the verb is imported only when a step runs), so the API validates recipes and
serves the catalogue without PyTorch.

A new method is a config module here (a pydantic step model with a `method` literal, `formats(step)`,
`output_format(step, fmt)`, and a table of the formats per variant), a verb in `methods/`, and one
`Method` row below."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from ..formats.kinds import ModelFormat
from . import auto, distill, export, prune, quantize


@dataclass(frozen=True)
class Method:
    name: str
    step_type: type[BaseModel]
    formats: Callable[[BaseModel], frozenset[ModelFormat]]
    output_format: Callable[[BaseModel, ModelFormat], ModelFormat]
    verb: str  # "module:function" under workers.compression.methods
    variants: tuple[str, dict]  # (field that changes the accepted formats, {value: formats})
    # why this step cannot follow the earlier ones ([(step, its input format)]), or None
    check_order: Callable[[BaseModel, list[tuple[BaseModel, ModelFormat]]], str | None] = lambda step, earlier: None
    # why the step cannot run without a dataset, or None
    needs_data: Callable[[BaseModel], str | None] = lambda step: None
    # why the step cannot run on a dataset without labels, or None
    needs_labels: Callable[[BaseModel], str | None] = lambda step: None
    # other uploaded models the step reads (ids), and why one cannot serve: (step, model info, its info)
    references: Callable[[BaseModel], list[str]] = lambda step: []
    check_reference: Callable[[BaseModel, dict, dict], str | None] = lambda step, model, other: None
    # whether the step trains on the dataset (then the measurement holds out part of it)
    trains: Callable[[BaseModel], bool] = lambda step: False
    # why the step cannot run on this model (its inspection info: layers, input, ...), or None
    check_model: Callable[[BaseModel, dict], str | None] = lambda step, info: None

    def variant(self, step: BaseModel) -> str:
        """The value of the step's variant field (a distillation's student source), for messages."""
        value = getattr(step, self.variants[0])
        return getattr(value, "source", value)

    def runner(self) -> Callable:
        module, function = self.verb.split(":")
        return getattr(importlib.import_module(f"workers.compression.methods.{module}"), function)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "quantize",
            quantize.QuantizeStep,
            quantize.formats,
            quantize.output_format,
            "quantize:quantize",
            ("scheme", quantize.FORMATS),
            quantize.check_order,
            needs_data=quantize.QuantizeStep.needs_data,
            trains=quantize.QuantizeStep.trains,
            check_model=quantize.check_model,
        ),
        Method(
            "prune",
            prune.PruneStep,
            prune.formats,
            prune.output_format,
            "prune:prune",
            ("kind", prune.FORMATS),
            prune.check_order,
            needs_data=prune.PruneStep.needs_data,
            trains=prune.PruneStep.trains,
            check_model=prune.check_model,
        ),
        Method(
            "distill",
            distill.DistillStep,
            distill.formats,
            distill.output_format,
            "distill:distill",
            ("student", distill.FORMATS),
            distill.check_order,
            needs_data=distill.DistillStep.needs_data,
            needs_labels=distill.DistillStep.needs_labels,
            trains=distill.DistillStep.trains,
            references=distill.references,
            check_reference=distill.check_reference,
        ),
        Method(
            "export",
            export.ExportStep,
            export.formats,
            export.output_format,
            "export:export",
            ("format", export.FORMATS),
            export.check_order,
        ),
        Method(
            "auto",
            auto.AutoStep,
            auto.formats,
            auto.output_format,
            "auto:auto",
            ("method", auto.FORMATS),
            auto.check_order,
            needs_data=auto.AutoStep.needs_data,
            trains=auto.AutoStep.trains,
            check_model=auto.check_model,
        ),
    )
}


def catalogue() -> list[dict]:
    """Every method with its parameters as JSON Schema and the formats each variant accepts."""
    out = []
    for m in METHODS.values():
        field, table = m.variants
        out.append(
            {
                "method": m.name,
                "description": (m.step_type.__doc__ or "").strip(),
                "schema": m.step_type.model_json_schema(),
                "formats": {field: {value: sorted(f.value for f in fmts) for value, fmts in table.items()}},
            }
        )
    return out
