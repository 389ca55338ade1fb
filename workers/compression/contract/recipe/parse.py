"""Recipes: an ordered list of typed steps, discriminated on `method` (and quantize steps on `scheme`).
Parsed once, at the edge (the API, the engine CLI); everything after passes the typed `Recipe`."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from ..errors import RecipeError
from ..formats import ModelFormat
from ..inspection import DatasetInfo, ModelInfo
from .data_needs import recovery_shortfall
from .quantize import BY_SCHEME
from .registry import METHODS


def step_tag(value: Any) -> str | None:
    """Which config a step is: its method, and for quantize its scheme too. One flat union of every config
    (rather than quantize's union nested in the methods' union) because OpenAPI's discriminator mapping
    cannot name a nested union, and client generators need the mapping."""
    get = value.get if isinstance(value, dict) else lambda key: getattr(value, key, None)
    method = get("method")
    return f"quantize:{get('scheme')}" if method == "quantize" else method


def _configs() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for name, method in METHODS.items():
        if name == "quantize":
            out.update({f"quantize:{scheme}": cls for scheme, cls in BY_SCHEME.items()})
        else:
            out[name] = method.step_type
    return out


CONFIGS = _configs()
Step = Annotated[
    Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in CONFIGS.items())],  # noqa: UP007
    Discriminator(step_tag),
]


# the shape of a stored recipe: a row written under another version is migrated (migrations/), never guessed at
RECIPE_SCHEMA_VERSION = 1


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = Field(RECIPE_SCHEMA_VERSION, description="the recipe format's version; omit it")
    steps: list[Step] = Field(min_length=1, max_length=16)

    def summary(self) -> str:
        """The steps in a few words each, in order: what a job list shows."""
        return " → ".join(step.summary() for step in self.steps)


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
    """One step from its JSON form into its typed config."""
    return METHODS[raw["method"]].parse(raw)


def describe_validation_error(e: ValidationError | list[dict]) -> str:
    """A recipe's validation errors in words, each at its place in the recipe (`steps.0.scheme: ...`)."""
    parts = []
    for err in e.errors() if isinstance(e, ValidationError) else e:
        # the union tags pydantic puts in a location ("quantize:int8_static") say nothing the step does not
        where = ".".join(str(p) for p in err["loc"] if p not in CONFIGS) or "recipe"
        msg = err["msg"]
        given = err.get("input") if isinstance(err.get("input"), dict) else {}
        if err["type"] == "union_tag_not_found":
            msg = f"each step needs a 'method' ({', '.join(METHODS)})"
        elif err["type"] == "union_tag_invalid" and given.get("method") != "quantize":
            msg = f"unknown method {given.get('method')!r}; available: {', '.join(METHODS)}"
        elif err["type"] == "union_tag_invalid":  # a quantize step without a known scheme: pydantic's own words
            where += ".scheme"
            schemes = [repr(s) for s in BY_SCHEME]
            msg = "Field required" if given.get("scheme") is None else "Input should be "
            msg += "" if given.get("scheme") is None else ", ".join(schemes[:-1]) + " or " + schemes[-1]
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def check_recipe(
    recipe: Recipe,
    fmt: ModelFormat,
    *,
    model_info: ModelInfo | None = None,
    has_data: bool | None = None,
    has_labels: bool | None = None,
    data_info: DatasetInfo | None = None,
) -> list[ModelFormat]:
    """Walks the recipe over the model's format before any work; returns each step's output format.
    `model_info` (what inspection found), `has_data`, `has_labels` and `data_info` add the checks that need
    them when they are known."""
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
        if model_info and i == 1 and (reason := recovery_shortfall(step, model_info, data_info)):
            raise RecipeError(f"{where}: {reason}")
        earlier.append((step, fmt))
        fmt = method.output_format(step, fmt)
        formats.append(fmt)
    return formats
