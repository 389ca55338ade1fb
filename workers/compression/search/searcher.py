"""The `auto` search: builds candidate recipes with the ordinary method verbs, measures each beside the
original (the job's own protocol, shorter timing), and spends a wall-clock budget where it pays:

1. screen: the int8 runtimes and structured pruning ratios, untrained (short calibration, no recovery) -
   cheap signals of what each technique buys in speed and size and what it costs in accuracy;
2. guard: when the best int8 candidate is over the accuracy budget, full calibration with the sensitive
   layers kept in float, then quantization-aware training;
3. successive halving over the training arms (pruning ratios with recovery, a derived student distilled):
   every arm trains briefly, the better half twice as long, and so on; after each round the best arm within
   the budget is combined with the best quantization;
4. the rest of the quantization schemes, while time remains.

Candidates are scored on a validation split of the training data, so the job's final measurement (on the
held-out evaluation data) is not the data the search chose on. Hand-written: no library searches whole
compression pipelines under an accuracy budget (the closest, NNCF's accuracy-aware and AutoML flows,
tune one technique on one runtime)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..contract import report as results_report
from ..contract.errors import EngineError, StepFailedError
from ..contract.recipe import AutoStep, ExportStep, QuantizeConfig
from ..contract.report import SearchRecord
from ..formats import LoadedModel, ModelFormat
from ..measure import Measurement, MeasureSettings, Ratios, measure_models, outputs_of
from ..methods import run_step
from ..methods.base import StepContext, StepOutput
from . import space
from .objective import Point, candidate_drop, gain, pareto_front, recommend, speedup

MIN_VALIDATION = 100  # below this many training samples the search validates on the evaluation data
VALIDATION_FRACTION = 0.2
FRONT_LIMIT = 6  # front members measured again and kept as artifacts; the rest keep their search figures
QUICK_SECONDS = 0.5  # search timing per model and batch size (the final measurement uses the job's)
PROMISING_GAIN = 1.05  # a pruning ratio that buys less than 5 % is not worth training
DEGENERATE_TOP1_SHARE = 0.9  # without labels, an original this one-sided makes top-1 agreement uninformative
COMBINED_ARMS = 2  # trained models per halving round combined with the best quantizations


class OutOfTime(BaseException):
    """Raised from progress callbacks when the budget is spent; BaseException so no library swallows it."""


@dataclass
class Evaluated:
    id: str
    candidate: space.Candidate
    result: StepOutput
    runtime: str
    measurement: Measurement
    ratios: Ratios
    point: Point
    load_s: float
    measure_s: float


class Search:
    def __init__(self, model: LoadedModel, auto: AutoStep, ctx: StepContext):
        self.model, self.auto, self.ctx = model, auto, ctx
        self.start = time.monotonic()
        self.budget_s = auto.budget_minutes * 60
        self.settings = ctx.measure or MeasureSettings(device=ctx.device)
        self.quick = self.settings.model_copy(
            update=dict(warmup=2, rounds=3, seconds_per_model=min(QUICK_SECONDS, self.settings.seconds_per_model))
        )
        data = ctx.data if ctx.data is not None else ctx.eval_data
        if len(data) >= MIN_VALIDATION:
            self.train, self.val = data.split(VALIDATION_FRACTION, seed=auto.seed)
            self.validation = f"{len(self.val)} samples held out of the training data"
        else:
            self.train, self.val = data, ctx.eval_data or data
            self.validation = f"the evaluation data ({len(self.val)} samples): too little training data to split"
        self.onnx = model.format == ModelFormat.ONNX
        self.quality, self.quality_note = self._quality_metric()
        self.records: list[dict] = []
        self.evaluated: list[Evaluated] = []
        self.built: dict[str, StepOutput] = {}
        self.files: set[Path] = set()
        self.cost_s: dict[str, float] = {}  # seconds per candidate (per epoch for training) by kind
        self.base: Measurement | None = None
        self.stopped: str | None = None

    # ------------------------------------------------------------ the plan

    def run(self) -> StepOutput:
        quant = space.screen_quantization(self.auto, self.onnx, self.ctx.device)
        head, tail = quant[:3], quant[3:]
        if self.auto.objective != "latency":  # low-bit weights are the size gains: screen them all first
            head, tail = quant, []
        for c in [*head, *space.screen_pruning(self.auto, self.onnx)]:
            self.evaluate(c)
        self.guard_quantization()
        self.successive_halving(self.training_arms())
        for c in tail:
            self.evaluate(c)
        return self.finish()

    def guard_quantization(self) -> None:
        """When the scheme that would gain most is over the accuracy budget, it is tried again with the
        guard (per-layer sensitivity; the most sensitive layers stay in float) and, for int8, with QAT."""
        screened = [e for e in self.evaluated if e.candidate.rung == "screen" and _is_quant(e.candidate)]
        budget, objective = self.auto.max_accuracy_drop, self.auto.objective
        best_fit = max((gain(objective, e.point) for e in self.evaluated if e.point.drop <= budget), default=1.0)
        over = [e for e in screened if e.point.drop > budget and gain(objective, e.point) > best_fit]
        if over:
            best = max(over, key=lambda e: gain(objective, e.point))
            for c in space.guarded_quantization(self.auto, best.candidate.steps[-1], budget):
                self.evaluate(c)

    def training_arms(self) -> list[tuple[str, float]]:
        arms = []
        if "prune" in self.auto.techniques and not self.onnx:
            for e in self.evaluated:
                step = e.candidate.steps[0]
                if e.candidate.rung == "screen" and step.method == "prune":
                    if gain(self.auto.objective, e.point) >= PROMISING_GAIN:
                        arms.append(("prune", step.sparsity))
        derivable = self.model.format in (ModelFormat.PT2, ModelFormat.SAFETENSORS)
        if "distill" in self.auto.techniques and derivable:
            arms.append(("distill", space.DERIVED_WIDTH))
        return arms

    def successive_halving(self, arms: list[tuple[str, float]]) -> None:
        """Every arm trains FIRST_EPOCHS. An arm within the accuracy budget is done (more epochs would not make
        it faster or smaller), and the best two are combined with the best quantizations. Of the arms over the
        budget, those that would beat the best arm within it go on, the better half (least accuracy lost), with
        twice the epochs, until they fit, run out of epochs, or the time budget ends."""
        epochs = space.FIRST_EPOCHS
        budget, objective = self.auto.max_accuracy_drop, self.auto.objective
        while arms and epochs <= space.MAX_EPOCHS and not self.stopped:
            scored = []
            for kind, value in arms:
                found = self.evaluate(space.training_arm(kind, value, epochs, self.auto.seed))
                if found:
                    scored.append(((kind, value), max(found, key=self._rank)))
            within = sorted((e for _, e in scored if e.point.drop <= budget), key=lambda e: -gain(objective, e.point))
            # the best two trained models within budget, made faster still by the best runtimes: two, because the
            # eager speed of a trained model predicts its speed under int8 only roughly
            for best in within[:COMBINED_ARMS]:
                for finisher in self.finishers():
                    self.evaluate(space.with_finisher(best.candidate, finisher))
            trained = [e for e in self.evaluated if e.candidate.rung == "train" and e.point.drop <= budget]
            best_fit = max((gain(objective, e.point) for e in trained), default=0.0)
            over = [(arm, e) for arm, e in scored if e.point.drop > budget and gain(objective, e.point) > best_fit]
            over.sort(key=lambda pair: (pair[1].point.drop, -gain(objective, pair[1].point)))
            arms = [arm for arm, _ in over[: (len(over) + 1) // 2]]  # the better half, rounded up
            epochs *= 2

    def finishers(self) -> list[QuantizeConfig | ExportStep]:
        """The single-step quantizations (or ONNX export) within the accuracy budget, best first (at most 2)."""
        fits = [
            e
            for e in self.evaluated
            if len(e.candidate.steps) == 1
            and e.candidate.steps[0].method in ("quantize", "export")
            and e.point.drop <= self.auto.max_accuracy_drop
        ]
        fits.sort(key=lambda e: gain(self.auto.objective, e.point), reverse=True)
        steps = []
        for e in fits:
            step = e.candidate.steps[0]
            if step not in steps and gain(self.auto.objective, e.point) > 1.0:
                steps.append(step)
        return steps[:2]

    def _rank(self, e: Evaluated) -> tuple:
        fits = e.point.drop <= self.auto.max_accuracy_drop
        return (fits, gain(self.auto.objective, e.point) if fits else -e.point.drop)

    # ------------------------------------------------------------ one candidate

    def evaluate(self, cand: space.Candidate) -> list[Evaluated]:
        """Builds and measures one candidate; records it whatever happens. Returns its measured artifacts."""
        cand = space.runnable(self.auto, cand)
        if cand is None:
            return []
        key = _key(cand.steps)
        if any(r["key"] == key for r in self.records):
            return [e for e in self.evaluated if _key(e.candidate.steps) == key]
        cid = f"c{len(self.records) + 1:02d}"
        record = {"id": cid, "label": cand.label, "rung": cand.rung, "recipe": cand.recipe(), "key": key}
        self.records.append(record)
        # a kind not built yet is assumed as cheap as the cheapest so far: if it is not, the budget stops it
        estimate = self.cost_s.get(_kind(cand), min(self.cost_s.values(), default=0.0)) * max(1, cand.epochs)
        remaining = self.remaining()
        if self.evaluated and remaining < estimate:
            record.update(
                status="skipped",
                reason=f"the time budget would run out: it takes about {estimate:.0f} s, {max(0, remaining):.0f} s "
                "were left",
            )
            self.stopped = "budget"
            return []
        started = time.monotonic()
        try:
            self._stage(cid, cand.label, "building")
            result = self._build(cand, cid)
            artifacts = [a for a in (result, *result.alternatives) if _runtime(a) in self.auto.runtimes]
            if not artifacts:
                raise StepFailedError(f"no artifact for the runtimes {self.auto.runtimes}")
            found = self._measure(cid, cand, artifacts, started)
        except OutOfTime:
            record.update(status="stopped", reason="the time budget ran out while it was being built or measured")
            self.stopped = "budget"
            return []
        except Exception as e:  # a candidate that cannot be built is a finding, not the end of the search
            message = e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            record.update(status="failed", reason=message[:500], seconds=round(time.monotonic() - started, 1))
            return []
        self.cost_s[_kind(cand)] = (time.monotonic() - started) / max(1, cand.epochs)
        record.update(status="measured", seconds=round(time.monotonic() - started, 1))
        record["artifacts"] = [self._describe(e) for e in found]
        self._publish()
        return found

    def _build(self, cand: space.Candidate, cid: str) -> StepOutput:
        """Runs the candidate's steps; a prefix already built (the pruned model a combination starts from)
        is reused, not rebuilt."""
        result = None
        for i, step in enumerate(cand.steps):
            key = _key(cand.steps[: i + 1])
            if key in self.built:
                result = self.built[key]
                continue
            model = self.ctx.load_input() if result is None else self.ctx.load_artifact(result.path, None)
            sub = StepContext(
                out_dir=self.ctx.out_dir,
                index=self.ctx.index,
                method=f"auto-{cid}-{i + 1}-{step.method}",
                data=self.train,
                eval_data=self.val,
                checkpoint_dir=(self.ctx.checkpoint_dir or self.ctx.out_dir / "checkpoints") / cid,
                device=self.ctx.device,
                progress=lambda f, s, cid=cid, label=cand.label: self._stage(cid, label, s),
                measure=self.ctx.measure,
            )
            result = run_step(model, step, sub)
            self.files.update(r.path for r in (result, *result.alternatives))
            self.built[key] = result
        return result

    def _measure(self, cid: str, cand: space.Candidate, artifacts: list[StepOutput], started: float):
        loaded, load_s = [], []
        for a in artifacts:
            t = time.monotonic()
            loaded.append(self.ctx.load_artifact(a.path, a.runtime))
            load_s.append(time.monotonic() - t)
            self._check()
        t = time.monotonic()
        ms, rs = measure_models(
            [self.model, *loaded],
            self.val,
            self.quick,
            progress=lambda f, s: self._stage(cid, cand.label, f"measuring: {s}"),
        )
        measure_s = (time.monotonic() - t) / (len(loaded) + 1)
        del loaded
        # each inductor candidate compiles new graphs; dropping dynamo's caches keeps a long search's memory flat
        torch._dynamo.reset()
        self.base = self.base or ms[0]
        found = []
        for i, (a, m, r) in enumerate(zip(artifacts, ms[1:], rs[1:])):
            drop = candidate_drop(self.quality, ms[0], m)
            point = Point(f"{cid}-{_runtime(a)}", drop, speedup(r.speedup_b1, r.speedup_bN), r.size_ratio)
            found.append(Evaluated(point.key, cand, a, _runtime(a), m, r, point, load_s[i], measure_s))
        self.evaluated.extend(found)
        return found

    def _quality_metric(self) -> tuple[str, str | None]:
        """What the accuracy budget is applied to: accuracy with labels, else top-1 agreement with the original,
        unless the original predicts one class for nearly every sample (a model far from its training data, a
        random-weight one): then agreement cannot tell candidates apart and the output cosine similarity is used."""
        if self.val.y is not None:
            return "accuracy", None
        out = outputs_of(self.model, self.val.x, self.quick.batch, self.ctx.device)
        if out.ndim != 2 or out.shape[1] < 2:
            return "agreement", None
        share = float(out.argmax(1).bincount().max()) / len(out)
        if share < DEGENERATE_TOP1_SHARE:
            return "agreement", None
        note = (
            f"the original predicts one class for {share:.0%} of the search's validation samples, so top-1 agreement "
            "cannot tell candidates apart: the accuracy budget was applied to the output cosine similarity "
            "(1 - cosine <= max_accuracy_drop)"
        )
        return "cosine", note

    # ------------------------------------------------------------ time

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def reserve(self) -> float:
        """What measuring the front again at the end will take: each member's load (inductor compiles) and
        measurement, at the job's timing rather than the search's."""
        extra = 2 * max(0.0, self.settings.seconds_per_model - self.quick.seconds_per_model)
        members = self.front()
        per_model = max((e.measure_s for e in members), default=0.0) + extra
        return per_model * (len(members) + 1) + sum(e.load_s for e in members)

    def remaining(self) -> float:
        return self.budget_s - self.elapsed() - self.reserve()

    def _check(self) -> None:
        # the first candidate always finishes, so even the smallest budget returns a result
        if self.evaluated and self.remaining() <= 0:
            raise OutOfTime

    def _stage(self, cid: str, label: str, stage: str) -> None:
        self._check()
        front = len(self.front())
        self.ctx.progress(
            min(0.99, self.elapsed() / self.budget_s),
            f"candidate {cid} ({label}): {stage}; {len(self.evaluated)} measured, {front} on the front",
        )

    # ------------------------------------------------------------ results

    def front(self) -> list[Evaluated]:
        """The Pareto front, at most FRONT_LIMIT members, the recommended one always among them."""
        if not self.evaluated:
            return []
        by_key = {e.point.key: e for e in self.evaluated}
        points = [e.point for e in self.evaluated]
        front = sorted(pareto_front(points), key=lambda p: gain(self.auto.objective, p), reverse=True)
        rec = recommend(points, self.auto.objective, self.auto.max_accuracy_drop)
        members = [rec.point, *[p for p in front if p is not rec.point]][:FRONT_LIMIT]
        return [by_key[p.key] for p in members]

    def _describe(self, e: Evaluated) -> dict:
        return {
            "candidate": e.id,
            "runtime": e.runtime,
            "artifact": e.result.path.name,
            "accuracy_drop": e.point.drop,
            "speedup_b1": e.ratios.speedup_b1,
            "speedup_bN": e.ratios.speedup_bN,
            "size_ratio": e.ratios.size_ratio,
            "measurement": e.measurement.model_copy(update={"env": {}}),
        }

    def _front_results(self) -> tuple[list[StepOutput], list]:
        from ..results import Measured

        members, results, measured = self.front(), [], []
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
        return results, measured

    def summary(self, members: list[Evaluated]) -> SearchRecord:
        on_front = {e.id for e in members}
        candidates = []
        for record in self.records:
            item = {k: v for k, v in record.items() if k != "key"}
            for a in item.get("artifacts", []):
                a["on_front"] = a["candidate"] in on_front
                if not a["on_front"]:
                    a["artifact"] = None  # measured, then deleted: only the front's files are kept
            candidates.append(item)
        notes = [self.quality_note] if self.quality_note else []
        if self.stopped:
            skipped = sum(r["status"] in ("skipped", "stopped") for r in self.records)
            notes.append(
                f"the time budget ({self.auto.budget_minutes:g} min) ran out: {len(self.evaluated)} artifact(s) "
                f"measured, {skipped} candidate(s) not tried or stopped; the best found so far is returned"
            )
        return SearchRecord(
            notes=notes,
            objective=self.auto.objective,
            max_accuracy_drop=self.auto.max_accuracy_drop,
            budget_s=self.budget_s,
            search_s=round(self.elapsed(), 1),
            stopped=self.stopped,
            validation=self.validation,
            quality=self.quality,
            candidates=[results_report.Candidate.model_validate(c) for c in candidates],
            front=[e.id for e in members],
        )

    def _publish(self) -> None:
        """A report of the front so far (the job's results shape), for progress and for a cancelled job."""
        from ..results import build_report

        results, measured = self._front_results()
        main, *rest = results
        main.alternatives = rest
        main.search = self.summary(self.front())
        spec = self.model.require_spec()
        report = build_report([(self.auto, measured)], self.base, spec, self.train, self.val)
        report.partial = True
        self.ctx.on_partial(report)

    def finish(self) -> StepOutput:
        if not self.evaluated:
            failures = [f"{r['label']}: {r.get('reason')}" for r in self.records]
            raise StepFailedError("auto found no candidate it could build: " + "; ".join(failures))
        members = self.front()
        results, _ = self._front_results()
        main, *rest = results
        main.alternatives = rest
        main.search = self.summary(members)
        kept = {r.path for r in results}
        for path in self.files - kept:
            path.unlink(missing_ok=True)
        return main


def _recipe_of(e: Evaluated) -> list[dict]:
    """The recipe that rebuilds this artifact as a job: a quantization measured on several runtimes names
    the runtime of this one."""
    recipe = e.candidate.recipe()
    last = e.candidate.steps[-1]
    if getattr(last, "runtime", None) == "auto" and e.runtime in ("inductor", "onnxruntime"):
        recipe[-1]["runtime"] = e.runtime
    return recipe


def _key(steps) -> str:
    return json.dumps([s.model_dump(mode="json") for s in steps], sort_keys=True)


def _kind(cand: space.Candidate) -> str:
    return "+".join(f"{s.method}:{getattr(s, 'scheme', getattr(s, 'kind', ''))}" for s in cand.steps)


def _runtime(result: StepOutput) -> str:
    if result.runtime:
        return result.runtime
    return "onnxruntime" if result.format == ModelFormat.ONNX else "eager"


def _is_quant(cand: space.Candidate) -> bool:
    return len(cand.steps) == 1 and cand.steps[0].method == "quantize"
