"""`auto`: search compression pipelines under an accuracy budget and a time budget; the step's artifact is
the recommended one, its alternatives the rest of the Pareto front (search/)."""

from __future__ import annotations

from ..formats import LoadedModel
from ..search.searcher import Search
from ..steps.auto import AutoStep
from .base import StepContext, StepResult


def auto(model: LoadedModel, step: AutoStep, ctx: StepContext) -> StepResult:
    return Search(model, step, ctx).run()
