"""Recipes: an ordered list of typed steps, discriminated on `method`."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RecipeError
from .formats import ModelFormat
from .steps import METHODS

Step = Annotated[Union[tuple(m.step_type for m in METHODS.values())], Field(discriminator="method")]  # noqa: UP007


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: list[Step] = Field(min_length=1, max_length=16)


def parse_recipe(raw: dict | Recipe) -> Recipe:
    if isinstance(raw, Recipe):
        return raw
    if not isinstance(raw, dict):
        raise RecipeError('a recipe is a JSON object like {"steps": [{"method": "quantize", "scheme": "fp16"}]}')
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(describe_validation_error(e)) from None


def parse_step(raw: dict) -> BaseModel:
    """One stored step (already validated at submission) back into its typed config."""
    return METHODS[raw["method"]].step_type.model_validate(raw)


def describe_validation_error(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"] if p not in tuple(METHODS)) or "recipe"
        msg = err["msg"]
        if err["type"] == "union_tag_invalid":
            msg = f"unknown method {err['input'].get('method')!r}; available: {', '.join(METHODS)}"
        elif err["type"] == "union_tag_not_found":
            msg = f"each step needs a 'method' ({', '.join(METHODS)})"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def check_recipe(
    recipe: Recipe,
    fmt: ModelFormat,
    *,
    model_info: dict | None = None,
    has_data: bool | None = None,
    has_labels: bool | None = None,
) -> list[ModelFormat]:
    """Walks the recipe over the model's format before any work; returns each step's output format.
    `model_info` (what inspection found), `has_data` and `has_labels` add the checks that need them
    when they are known."""
    formats, earlier = [], []
    for i, step in enumerate(recipe.steps, start=1):
        method = METHODS[step.method]
        accepted = method.formats(step)
        where = f"step {i} ({step.method} {method.variant(step)})"
        if fmt not in accepted:
            raise RecipeError(f"{where} does not accept {fmt} models; it accepts {', '.join(sorted(accepted))}")
        if any(s.method == "auto" for s, _ in earlier):
            raise RecipeError(f"{where}: auto is a whole search and comes alone; it cannot be followed by other steps")
        if reason := method.check_order(step, earlier):
            raise RecipeError(f"{where}: {reason}")
        if has_data is False and (reason := method.needs_data(step)):
            raise RecipeError(f"{where}: {reason}; give the job a dataset_id")
        if has_labels is False and (reason := method.needs_labels(step)):
            raise RecipeError(f"{where}: {reason}; the dataset has no 'y'")
        # the model as inspected is the input of the first step only; later steps see a changed model
        if model_info and i == 1 and (reason := method.check_model(step, model_info)):
            raise RecipeError(f"{where}: {reason}")
        earlier.append((step, fmt))
        fmt = method.output_format(step, fmt)
        formats.append(fmt)
    return formats
