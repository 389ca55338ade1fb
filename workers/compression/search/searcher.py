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

import time

from ..contract.errors import EngineError, short_error
from ..contract.recipe import AutoStep, ExportStep, QuantizeConfig
from ..contract.vocabulary import CandidateStatus, Runtime
from ..formats import LoadedModel, ModelFormat, save_model
from ..measure import MeasureSettings
from ..measure.quality import within_budget
from ..quantization.candidates import calibration_batches
from ..quantization.peers import build_peers
from ..step import StepContext, StepOutput
from . import space
from .budget import Budget, OutOfTime
from .evaluator import Evaluated, Evaluator, RunStep, choose_validation, recipe_key, search_timing
from .objective import gain
from .reporter import Findings, describe

PROMISING_GAIN = 1.05  # a pruning ratio that buys less than 5 % is not worth training
COMBINED_ARMS = 2  # trained models per halving round combined with the best quantizations


class Search:
    def __init__(self, model: LoadedModel, auto: AutoStep, ctx: StepContext, run_step: RunStep):
        """`run_step(model, step, ctx)` runs one recipe step (the methods' dispatcher): how candidates are built."""
        self.model, self.auto, self.ctx = model, auto, ctx
        settings = ctx.measure or MeasureSettings(device=ctx.device)
        quick = search_timing(settings)
        self.budget = Budget(auto.budget_minutes * 60, settings, quick)  # the clock starts here
        self.validation = validation = choose_validation(model, auto, ctx, quick)
        self.onnx = model.format == ModelFormat.ONNX
        self.evaluator = Evaluator(
            model, auto, ctx, validation, quick, run_step, check=self._check, on_stage=self._stage
        )
        self.findings = Findings(model, auto, ctx, self.budget, validation)
        self.stopped: str | None = None
        if peers := self.peer_runtimes():
            self.budget.also_at_the_end(len(peers), like="quantize:int8_static")

    def peer_runtimes(self) -> set[str]:
        """The runtimes of the peers this search builds at its end (none without quantization or data)."""
        if "quantize" not in self.auto.techniques or self.validation.train is None:
            return set()
        return {Runtime.ONNXRUNTIME, Runtime.OPENVINO} & set(self.auto.runtimes)

    @property
    def evaluated(self) -> list[Evaluated]:
        return self.findings.evaluated

    # ------------------------------------------------------------ the plan

    def run(self) -> StepOutput:
        quant = space.screen_quantization(self.auto, self.onnx, self.ctx.device)
        head, tail = quant[:3], quant[3:]
        if self.auto.objective != "latency":  # low-bit weights are the size gains: screen them all first
            head, tail = quant, []
        for c in [*head, *space.screen_pruning(self.auto, self.onnx)]:  # 1. screen
            self.evaluate(c)
        self.guard_quantization()  # 2. guard
        self.successive_halving(self.training_arms())  # 3. successive halving
        for c in tail:  # 4. the rest of the quantization schemes
            self.evaluate(c)
        main = self.findings.final_output(self.evaluator.files, self.stopped)
        main.alternatives += self.peers(main)
        return main

    def peers(self, main: StepOutput) -> list[StepOutput]:
        """The field's one-call int8 recipes on the original model, measured beside the front (quantization/
        peers.py), when the search may use their runtimes and its budget leaves the time."""
        runtimes = self.peer_runtimes()
        if not runtimes:
            return []
        if self.budget.remaining(self.findings.front()) < 0:  # (their time is in the reserve)
            main.notes.append("the peers were not built: the search's budget ran out")
            return []
        self.ctx.progress(0.97, "building the peers' int8 (onnxruntime quantize_static, NNCF)")
        try:
            original = self.ctx.load_input()
            folder = self.ctx.out_dir / "peers"
            folder.mkdir(exist_ok=True)
            spec = original.require_spec()
            source = (
                original.path
                if self.onnx
                else save_model(original.module, spec, ModelFormat.ONNX, folder / "fp32.onnx")
            )
            batches = [x.cpu().numpy() for x in calibration_batches(self.validation.train, 8, "cpu")]
            built, failed = build_peers(source, batches, folder, spec.names or None, runtimes)
        except Exception as e:  # the comparison is extra information; the search's result stands
            main.notes.append(f"the peers could not be built: {short_error(e)}")
            return []
        main.notes.extend(failed)
        return [
            StepOutput(path, fmt, [f"peer: {peer}, every option at its default"], runtime=runtime, peer=peer)
            for peer, path, runtime, fmt in built
            if runtime in runtimes
        ]

    def guard_quantization(self) -> None:
        """When the scheme that would gain most is over the accuracy budget, it is tried again with the
        guard (per-layer sensitivity; the most sensitive layers stay in float) and, for int8, with QAT."""
        screened = [e for e in self.evaluated if e.candidate.rung == "screen" and _is_quant(e.candidate)]
        budget, objective = self.auto.max_accuracy_drop, self.auto.objective
        best_fit = max((gain(objective, e.point) for e in self.evaluated if within_budget(e.point.drop, budget)), default=1.0)
        over = [e for e in screened if not within_budget(e.point.drop, budget) and gain(objective, e.point) > best_fit]
        if over:
            best = max(over, key=lambda e: gain(objective, e.point))
            for c in space.guarded_quantization(self.auto, best.candidate.steps[-1], budget, self.onnx):
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
            within = sorted((e for _, e in scored if within_budget(e.point.drop, budget)), key=lambda e: -gain(objective, e.point))
            # the best two trained models within budget, made faster still by the best runtimes: two, because the
            # eager speed of a trained model predicts its speed under int8 only roughly
            for best in within[:COMBINED_ARMS]:
                for finisher in self.finishers():
                    self.evaluate(space.with_finisher(best.candidate, finisher))
            trained = [e for e in self.evaluated if e.candidate.rung == "train" and within_budget(e.point.drop, budget)]
            best_fit = max((gain(objective, e.point) for e in trained), default=0.0)
            over = [(arm, e) for arm, e in scored if not within_budget(e.point.drop, budget) and gain(objective, e.point) > best_fit]
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
            and within_budget(e.point.drop, self.auto.max_accuracy_drop)
        ]
        fits.sort(key=lambda e: gain(self.auto.objective, e.point), reverse=True)
        steps = []
        for e in fits:
            step = e.candidate.steps[0]
            if step not in steps and gain(self.auto.objective, e.point) > 1.0:
                steps.append(step)
        return steps[:2]

    def _rank(self, e: Evaluated) -> tuple:
        fits = within_budget(e.point.drop, self.auto.max_accuracy_drop)
        return (fits, gain(self.auto.objective, e.point) if fits else -e.point.drop)

    # ------------------------------------------------------------ one candidate

    def evaluate(self, cand: space.Candidate) -> list[Evaluated]:
        """Builds and measures one candidate; records it whatever happens. Returns its measured artifacts."""
        cand = space.runnable(self.auto, cand)
        if cand is None:
            return []
        key = recipe_key(cand.steps)
        if self.findings.tried(key):
            return self.findings.measured(key)
        record = self.findings.new_record(cand, key)
        estimate = self.budget.estimate(cand)
        remaining = self.budget.remaining(self.findings.front())
        if self.evaluated and remaining < estimate:
            record.update(
                status=CandidateStatus.SKIPPED,
                reason=f"the time budget would run out: it takes about {estimate:.0f} s, {max(0, remaining):.0f} s "
                "were left",
            )
            self.stopped = "budget"
            return []
        started = time.monotonic()
        try:
            found = self.evaluator.evaluate(cand, record["id"])
        except OutOfTime:
            record.update(status=CandidateStatus.STOPPED, reason="the time budget ran out while it was being built or measured")
            self.stopped = "budget"
            return []
        except Exception as e:  # a candidate that cannot be built is a finding, not the end of the search
            message = e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            record.update(status=CandidateStatus.FAILED, reason=message[:500], seconds=round(time.monotonic() - started, 1))
            return []
        self.findings.evaluated.extend(found)
        self.budget.spent(cand, time.monotonic() - started)
        record.update(status=CandidateStatus.MEASURED, seconds=round(time.monotonic() - started, 1))
        record["artifacts"] = [describe(e) for e in found]
        self.findings.publish(self.evaluator.base, self.stopped)
        return found

    def _check(self) -> None:
        self.budget.check(self.findings.front())

    def _stage(self, cid: str, label: str, stage: str) -> None:
        front = self.findings.front()
        self.budget.check(front)
        self.ctx.progress(
            min(0.99, self.budget.elapsed() / self.budget.budget_s),
            f"candidate {cid} ({label}): {stage}; {len(self.evaluated)} measured, {len(front)} on the front",
        )


def _is_quant(cand: space.Candidate) -> bool:
    return len(cand.steps) == 1 and cand.steps[0].method == "quantize"
