"""The method registry: each recipe method, its typed step config, the formats it takes and the checks
a recipe passes at submission. Torch-free, so the API validates recipes and serves the catalogue
without PyTorch; the engine finds each method's verb by the config's type (workers.compression.methods).

A new method is a config module here (a pydantic step model with a `method` literal, `formats(step)`,
`output_format(step, fmt)`, and a table of the formats per variant), one `Method` row below, and a verb
registered for its config type in the engine's `methods/`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, TypeAdapter

from ..formats import ModelFormat
from ..inspection import ModelInfo
from . import auto, distill, export, prune, quantize


@dataclass(frozen=True)
class Method:
    name: str
    step_type: object  # the pydantic config class, or an annotated union of them (quantize: one per scheme)
    formats: Callable[[BaseModel], frozenset[ModelFormat]]
    output_format: Callable[[BaseModel, ModelFormat], ModelFormat]
    variants: tuple[str, dict]  # (field that changes the accepted formats, {value: formats})
    # why this step cannot follow the earlier ones ([(step, its input format)]), or None
    check_order: Callable[[BaseModel, list[tuple[BaseModel, ModelFormat]]], str | None] = lambda step, earlier: None
    # why the step cannot run without a dataset, or None
    needs_data: Callable[[BaseModel], str | None] = lambda step: None
    # why the step cannot run on a dataset without labels, or None
    needs_labels: Callable[[BaseModel], str | None] = lambda step: None
    # other uploaded models the step reads (ids), and why one cannot serve: (step, model info, its info)
    references: Callable[[BaseModel], list[str]] = lambda step: []
    check_reference: Callable[[BaseModel, ModelInfo, ModelInfo], str | None] = lambda step, model, other: None
    # whether the step trains on the dataset (then the measurement holds out part of it)
    trains: Callable[[BaseModel], bool] = lambda step: False
    # why the step cannot run on this model (its inspection info: layers, input, ...), or None
    check_model: Callable[[BaseModel, ModelInfo], str | None] = lambda step, info: None

    def variant(self, step: BaseModel) -> str:
        """The value of the step's variant field (a distillation's student source), for messages."""
        value = getattr(step, self.variants[0])
        return getattr(value, "source", value)

    def schema(self) -> dict:
        """The step's JSON Schema. A union of configs (quantize: one per scheme) is given as the exact `oneOf`
        and, beside it, every option in one `properties` map, each naming the variants that take it
        (`x-variants`), so a form can be built from one object and still validate exactly."""
        schema = TypeAdapter(self.step_type).json_schema()
        if "oneOf" not in schema:
            return schema
        field = self.variants[0]
        properties: dict[str, dict] = {}
        for ref in schema["oneOf"]:
            variant = schema["$defs"][ref["$ref"].rsplit("/", 1)[-1]]
            tag = variant["properties"][field]["const"]
            for name, prop in variant["properties"].items():
                if name != field:
                    properties.setdefault(name, dict(prop, **{"x-variants": []}))["x-variants"].append(tag)
        tags = [schema["$defs"][r["$ref"].rsplit("/", 1)[-1]]["properties"][field]["const"] for r in schema["oneOf"]]
        return {
            "title": self.name,
            "type": "object",
            "properties": {
                "method": {"const": self.name, "type": "string"},
                field: {"type": "string", "enum": tags, "description": VARIANT_HELP.get(self.name, "")},
                **{k: v for k, v in properties.items() if k != "method"},
            },
            "required": [field],
            **schema,
        }

    def parse(self, raw: dict) -> BaseModel:
        return TypeAdapter(self.step_type).validate_python(raw)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "quantize",
            quantize.QuantizeStep,
            quantize.formats,
            quantize.output_format,
            ("scheme", quantize.FORMATS),
            quantize.check_order,
            needs_data=lambda step: step.needs_data(),
            trains=lambda step: step.trains(),
            check_model=quantize.check_model,
        ),
        Method(
            "prune",
            prune.PruneStep,
            prune.formats,
            prune.output_format,
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
            ("format", export.FORMATS),
            export.check_order,
        ),
        Method(
            "auto",
            auto.AutoStep,
            auto.formats,
            auto.output_format,
            ("method", auto.FORMATS),
            auto.check_order,
            needs_data=auto.AutoStep.needs_data,
            trains=auto.AutoStep.trains,
            check_model=auto.check_model,
        ),
    )
}


DESCRIPTIONS = {"quantize": "Lower-precision weights (and activations for the int8 schemes)."}
VARIANT_HELP = {"quantize": quantize.SCHEME_HELP}


def catalogue() -> list[dict]:
    """Every method with its parameters as JSON Schema and the formats each variant accepts."""
    out = []
    for m in METHODS.values():
        field, table = m.variants
        out.append(
            {
                "method": m.name,
                "description": DESCRIPTIONS.get(m.name) or (getattr(m.step_type, "__doc__", None) or "").strip(),
                "schema": m.schema(),
                "formats": {field: {value: sorted(f.value for f in fmts) for value, fmts in table.items()}},
            }
        )
    return out
