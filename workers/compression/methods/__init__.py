"""The method registry: each recipe method, its typed step config, the formats it takes and its verb.

A new method is one module with a pydantic step model (a `method` literal), `formats(step)`,
`output_format(step, fmt)` and the verb itself, added to METHODS below."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from ..formats import LoadedModel, ModelFormat
from . import export, quantize
from .base import StepContext, StepResult


@dataclass(frozen=True)
class Method:
    name: str
    step_type: type[BaseModel]
    formats: Callable[[BaseModel], frozenset[ModelFormat]]
    output_format: Callable[[BaseModel, ModelFormat], ModelFormat]
    run: Callable[[LoadedModel, BaseModel, StepContext], StepResult]
    variants: tuple[str, dict]  # (field that changes the accepted formats, {value: formats})


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("quantize", quantize.QuantizeStep, quantize.formats, quantize.output_format, quantize.quantize,
               ("scheme", quantize.FORMATS)),
        Method("export", export.ExportStep, export.formats, export.output_format, export.export,
               ("format", export.FORMATS)),
    )
}

__all__ = ["METHODS", "Method", "StepContext", "StepResult", "catalogue"]


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
