"""`auto`: search compression pipelines under an accuracy budget and a time budget; the step's artifact is
the recommended one, its alternatives the rest of the Pareto front (search/)."""

from __future__ import annotations

from ..contract.recipe import AutoStep
from ..formats import LoadedModel
from ..search.reporter import front_entry
from ..search.searcher import Search
from ..step import StepContext, StepOutput


def auto(model: LoadedModel, step: AutoStep, ctx: StepContext) -> StepOutput:
    from . import run_step  # the search builds its candidates with the other verbs

    return Search(model, step, ctx, run_step).run()


report_entry = front_entry  # the step's report: the front, the recommendation and the whole search
