"""`auto`: search compression pipelines under an accuracy budget and a time budget; the step's artifact is
the recommended one, its alternatives the rest of the Pareto front (search/)."""

from __future__ import annotations

from collections.abc import Sequence

from ..contract.measure import Measurement
from ..contract.recipe import AutoStep
from ..contract.report import SearchRecord, StepReport
from ..formats import LoadedModel
from ..search.objective import Point, candidate_drop, recommend, speedup
from ..search.searcher import Search
from .base import StepContext, StepOutput


def auto(model: LoadedModel, step: AutoStep, ctx: StepContext) -> StepOutput:
    return Search(model, step, ctx).run()


def report_entry(step: AutoStep, base: Measurement, options: Sequence, batch: int) -> StepReport:
    """The Pareto front measured again beside the baseline, and the member recommended for the objective
    within the accuracy budget (or the closest, saying so); the whole search in `search`."""
    from ..results import artifact_entry, ratio_notes, step_report

    search: SearchRecord | None = options[0].output.search
    quality = search.quality if search else "accuracy"
    points = [
        Point(
            i,
            candidate_drop(quality, base, o.measurement),
            speedup(o.ratios.speedup_b1, o.ratios.speedup_bN),
            o.ratios.size_ratio,
        )
        for i, o in enumerate(options)
    ]
    rec = recommend(points, step.objective, step.max_accuracy_drop)
    chosen = options[rec.point.key]
    entry = step_report(artifact_entry(step, chosen, base, batch))
    entry.front = [
        artifact_entry(step, o, base, batch, params=False).model_copy(update={"recommended": o is chosen}) for o in options
    ]
    entry.recommended = entry.artifact_id
    entry.objective = step.objective
    entry.within_budget = rec.within_budget
    entry.recommendation_reason = rec.reason
    entry.search = search
    entry.notes = [*chosen.output.notes, rec.reason, *(search.notes if search else []), *ratio_notes(chosen.ratios)]
    return entry
