"""What the search has found, and how it is reported: a record per candidate tried (whatever became of it),
the measured artifacts, the front (Pareto front and recommendation), the `SearchRecord` summary, the partial
report published while the search runs, and the step's final output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..contract import report as results_report
from ..contract.errors import StepFailedError
from ..contract.recipe import AutoStep
from ..contract.report import SearchRecord, StepReport
from ..contract.vocabulary import CandidateStatus, Runtime
from ..formats import LoadedModel
from ..measure import Measurement
from ..results import Measured, against_peers, artifact_entry, build_report, ratio_notes, step_report
from ..step import StepContext, StepOutput
from . import space
from .budget import Budget
from .evaluator import Evaluated, Validation, recipe_key
from .objective import Point, gain, pareto_front, quality_drop, recommend, speed_gain

FRONT_LIMIT = 6  # front members measured again and kept as artifacts; the rest keep their search figures


class Findings:
    """The search's records and measured artifacts, and the reports made of them."""

    def __init__(self, model: LoadedModel, auto: AutoStep, ctx: StepContext, budget: Budget, validation: Validation):
        self.model, self.auto, self.ctx = model, auto, ctx
        self.budget, self.validation = budget, validation
        self.records: list[dict] = []  # one per candidate tried, in order; "key" is its recipe_key
        self.evaluated: list[Evaluated] = []

    # ------------------------------------------------------------ what was tried

    def tried(self, key: str) -> bool:
        return any(r["key"] == key for r in self.records)

    def measured(self, key: str) -> list[Evaluated]:
        return [e for e in self.evaluated if recipe_key(e.candidate.steps) == key]

    def new_record(self, cand: space.Candidate, key: str) -> dict:
        """The record of a candidate about to be tried, with its id; its status is added when it is known."""
        cid = f"c{len(self.records) + 1:02d}"
        record = {"id": cid, "label": cand.label, "rung": cand.rung, "recipe": cand.recipe(), "key": key}
        self.records.append(record)
        return record

    def front(self) -> list[Evaluated]:
        """The Pareto front, at most FRONT_LIMIT members, the recommended one always among them."""
        if not self.evaluated:
            return []
        by_key = {e.point.key: e for e in self.evaluated}
        points = [e.point for e in self.evaluated]
        front = sorted(pareto_front(points), key=lambda p: gain(self.auto.objective, p), reverse=True)
        rec = recommend(points, self.auto.objective, self.auto.max_accuracy_drop, self.model.facts.task == "causal_lm")
        members = [rec.point, *[p for p in front if p is not rec.point]][:FRONT_LIMIT]
        return [by_key[p.key] for p in members]

    # ------------------------------------------------------------ reports

    def summary(self, members: list[Evaluated], stopped: str | None) -> SearchRecord:
        on_front = {e.id for e in members}
        candidates = []
        for record in self.records:
            item = {k: v for k, v in record.items() if k not in ("key", "artifacts")}
            if "artifacts" in record:  # copies: a member that leaves the front now may come back later
                item["artifacts"] = [
                    # measured, then deleted: only the front's files are kept
                    {
                        **a,
                        "on_front": a["candidate"] in on_front,
                        **({} if a["candidate"] in on_front else {"artifact": None}),
                    }
                    for a in record["artifacts"]
                ]
            candidates.append(item)
        notes = [self.validation.quality_note] if self.validation.quality_note else []
        if stopped:
            skipped = sum(r["status"] in (CandidateStatus.SKIPPED, CandidateStatus.STOPPED) for r in self.records)
            notes.append(
                f"the time budget ({self.auto.budget_minutes:g} min) ran out: {len(self.evaluated)} artifact(s) "
                f"measured, {skipped} candidate(s) not tried or stopped; the best found so far is returned"
            )
        return SearchRecord(
            notes=notes,
            objective=self.auto.objective,
            max_accuracy_drop=self.auto.max_accuracy_drop,
            budget_s=self.budget.budget_s,
            search_s=round(self.budget.elapsed(), 1),
            stopped=stopped,
            validation=self.validation.description,
            quality=self.validation.quality,
            candidates=[results_report.Candidate.model_validate(c) for c in candidates],
            front=[e.id for e in members],
        )

    def publish(self, base: Measurement, stopped: str | None) -> None:
        """A report of the front so far (the job's results shape), for progress and for a cancelled job."""
        members = self.front()
        _, measured = self._front_outputs(members, stopped)  # the first carries the search summary
        spec = self.model.require_spec()
        report = build_report(
            [(self.auto, measured)],
            base,
            spec,
            self.validation.train,
            self.validation.val,
            entry_for=lambda s: front_entry,
        )
        report.partial = True
        self.ctx.on_partial(report)

    def final_output(self, files: set[Path], stopped: str | None) -> StepOutput:
        """The recommended artifact, the rest of the front its alternatives; every other file is deleted."""
        if not self.evaluated:
            failures = [f"{r['label']}: {r.get('reason')}" for r in self.records]
            raise StepFailedError("auto found no candidate it could build: " + "; ".join(failures))
        main, _ = self._front_outputs(self.front(), stopped)
        kept = {r.path for r in (main, *main.alternatives)}
        for path in files - kept:
            path.unlink(missing_ok=True)
        return main

    def _front_outputs(self, members: list[Evaluated], stopped: str | None) -> tuple[StepOutput, list]:
        """The front as the step's output (the recommended member, the others its alternatives, the search
        summary), and each member with its measurement for build_report."""
        results, measured = [], []
        for e in members:
            r = StepOutput(
                e.result.path,
                e.result.format,
                notes=[f"auto candidate {e.id}: {e.candidate.label}", *e.result.notes],
                details={
                    "candidate": e.id,
                    "label": e.candidate.label,
                    "recipe": _recipe_of(e),
                    **({"step": e.result.details} if e.result.details else {}),
                },
                runtime=e.result.runtime,
            )
            results.append(r)
            measured.append(Measured(r, e.measurement, e.ratios))
        main, *rest = results
        main.alternatives = rest
        main.search = self.summary(members, stopped)
        return main, measured


def describe(e: Evaluated) -> dict:
    """What a candidate's record says of one of its measured artifacts."""
    return {
        "candidate": e.id,
        "runtime": e.runtime,
        "artifact": e.result.path.name,
        "accuracy_drop": e.point.drop,
        "speedup_b1": e.ratios.speedup_b1,
        "speedup_bN": e.ratios.speedup_bN,
        **({"speedup_decode": e.ratios.speedup_decode} if e.ratios.speedup_decode else {}),
        "size_ratio": e.ratios.size_ratio,
        "measurement": e.measurement.model_copy(update={"env": {}}),
    }


def _recipe_of(e: Evaluated) -> list[dict]:
    """The recipe that rebuilds this artifact as a job: a quantization measured on several runtimes names
    the runtime of this one."""
    recipe = e.candidate.recipe()
    last = e.candidate.steps[-1]
    if getattr(last, "runtime", None) == "auto" and e.runtime in (Runtime.INDUCTOR, Runtime.ONNXRUNTIME):
        recipe[-1]["runtime"] = e.runtime
    return recipe


def front_entry(step: AutoStep, base: Measurement, options: Sequence, batch: int) -> StepReport:
    """The Pareto front measured again beside the baseline, and the member recommended for the objective
    within the accuracy budget (or the closest, saying so); the whole search in `search`."""
    search: SearchRecord | None = options[0].output.search
    peers = [o for o in options if o.output.peer is not None]
    options = [o for o in options if o.output.peer is None]
    points = [
        Point(i, quality_drop(base, o.measurement), speed_gain(o.ratios, base.perplexity is not None), o.ratios.size_ratio)
        for i, o in enumerate(options)
    ]
    rec = recommend(points, step.objective, step.max_accuracy_drop, base.perplexity is not None)
    chosen = options[rec.point.key]
    entry = step_report(artifact_entry(step, chosen, base, batch))
    entry.front = [
        artifact_entry(step, o, base, batch, params=False).model_copy(update={"recommended": o is chosen})
        for o in options
    ]
    entry.recommended = entry.artifact_id
    entry.objective = step.objective
    entry.within_budget = rec.within_budget
    entry.recommendation_reason = rec.reason
    entry.search = search
    entry.notes = [*chosen.output.notes, rec.reason, *(search.notes if search else []), *ratio_notes(chosen.ratios)]
    if peers:
        entry.peers = [
            artifact_entry(step, o, base, batch, params=False).model_copy(update={"peer": o.output.peer}) for o in peers
        ]
        entry.against_peers = against_peers(step, base, chosen, peers)
        entry.notes.append(entry.against_peers.summary)
    return entry
