"""One candidate built with the ordinary method verbs and measured beside the original, on the search's
validation data and at the search's shorter timing; and the choice of that data and of the quality metric
the accuracy budget is applied to."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel

from ..contract.errors import StepFailedError
from ..contract.recipe import AutoStep
from ..contract.vocabulary import Runtime
from ..data import Dataset
from ..formats import LoadedModel, ModelFormat
from ..measure import Measurement, MeasureSettings, Ratios, measure_models, outputs_of
from ..measure.quality import DEGENERATE_TOP1_SHARE, degenerate_share, is_class_scores
from ..step import StepContext, StepOutput
from . import space
from .objective import Point, quality_drop, speed_gain

MIN_VALIDATION = 100  # below this many training samples the search validates on the evaluation data
VALIDATION_FRACTION = 0.2
QUICK_SECONDS = 0.5  # search timing per model and batch size (the final measurement uses the job's)
SCREENING_NEW_TOKENS = 16  # a language model's decoding, timed to rank candidates (the final measurement: the job's)


@dataclass
class Evaluated:
    """One measured artifact of a candidate (a quantization measured on several runtimes has one each)."""

    id: str
    candidate: space.Candidate
    result: StepOutput
    runtime: str
    measurement: Measurement
    ratios: Ratios
    point: Point
    load_s: float
    measure_s: float


@dataclass(frozen=True)
class Validation:
    """What candidates are trained and scored on, and what the accuracy budget is applied to."""

    train: Dataset
    val: Dataset
    description: str  # where `val` comes from, in words
    quality: str  # accuracy or agreement (measure/quality.py)
    quality_note: str | None  # why, when it is not the obvious one


def search_timing(settings: MeasureSettings) -> MeasureSettings:
    return settings.model_copy(
        update=dict(warmup=2, rounds=3, seconds_per_model=min(QUICK_SECONDS, settings.seconds_per_model))
    )


def choose_validation(model: LoadedModel, auto: AutoStep, ctx: StepContext, quick: MeasureSettings) -> Validation:
    data = ctx.data if ctx.data is not None else ctx.eval_data
    if len(data) >= MIN_VALIDATION:
        train, val = data.split(VALIDATION_FRACTION, seed=auto.seed)
        description = f"{len(val)} samples held out of the training data"
    else:
        train, val = data, ctx.eval_data or data
        description = f"the evaluation data ({len(val)} samples): too little training data to split"
    quality, note = _quality_metric(model, val, quick, ctx.device)
    return Validation(train, val, description, quality, note)


def _quality_metric(model: LoadedModel, val: Dataset, quick: MeasureSettings, device: str) -> tuple[str, str | None]:
    """What the accuracy budget is applied to, by the one quality rule (measure/quality.py) the report's
    verdicts use too: accuracy with labels, else agreement with the original; said in words when the
    original's predictions are one-sided, so agreement is taken together with cosine."""
    if val.y is not None:
        return "accuracy", None
    out = outputs_of(model, val.x, quick.batch, device)
    if not is_class_scores(out) or degenerate_share(out) < DEGENERATE_TOP1_SHARE:
        return "agreement", None
    note = (
        f"the original predicts one class for {degenerate_share(out):.0%} of the search's validation samples, so "
        "top-1 agreement alone cannot tell candidates apart: class scores were judged by the lower of top-1 "
        "agreement and cosine similarity, in the search and in the report alike"
    )
    return "agreement", note


RunStep = Callable[[LoadedModel, BaseModel, StepContext], StepOutput]  # the methods' dispatcher


class Evaluator:
    """Builds and measures candidates. `check` raises OutOfTime when the budget is spent; `on_stage` hears
    (candidate id, label, stage) and checks the budget too, so a long build stops mid-way."""

    def __init__(
        self,
        model: LoadedModel,
        auto: AutoStep,
        ctx: StepContext,
        validation: Validation,
        quick: MeasureSettings,
        run_step: RunStep,
        check: Callable[[], None],
        on_stage: Callable[[str, str, str], None],
    ):
        self.model, self.auto, self.ctx = model, auto, ctx
        self.validation, self.quick, self.run_step = validation, quick, run_step
        self.check, self.on_stage = check, on_stage
        self.built: dict[str, StepOutput] = {}  # by recipe_key of the steps
        self.files: set[Path] = set()  # every artifact written, the front's and the rest
        self.base: Measurement | None = None  # the original, as first measured
        self.language_model = model.facts.task == "causal_lm"

    def evaluate(self, cand: space.Candidate, cid: str) -> list[Evaluated]:
        """Builds `cand` and measures its artifacts for the search's runtimes; raises when it cannot."""
        self.on_stage(cid, cand.label, "building")
        result = self._build(cand, cid)
        artifacts = [a for a in (result, *result.alternatives) if runtime_of(a) in self.auto.runtimes]
        if not artifacts:
            raise StepFailedError(f"no artifact for the runtimes {self.auto.runtimes}")
        return self._measure(cid, cand, artifacts)

    def _build(self, cand: space.Candidate, cid: str) -> StepOutput:
        """Runs the candidate's steps; a prefix already built (the pruned model a combination starts from)
        is reused, not rebuilt."""
        result = None
        for i, step in enumerate(cand.steps):
            key = recipe_key(cand.steps[: i + 1])
            if key in self.built:
                result = self.built[key]
                continue
            model = self.ctx.load_input() if result is None else self.ctx.load_artifact(result.path, None)
            sub = StepContext(
                out_dir=self.ctx.out_dir,
                index=self.ctx.index,
                method=f"auto-{cid}-{i + 1}-{step.method}",
                data=self.validation.train,
                eval_data=self.validation.val,
                checkpoint_dir=(self.ctx.checkpoint_dir or self.ctx.out_dir / "checkpoints") / cid,
                device=self.ctx.device,
                progress=lambda f, s, cid=cid, label=cand.label: self.on_stage(cid, label, s),
                measure=self.ctx.measure,
                default_guard=False,  # the search screens unguarded, then adds guarded candidates (space.py)
            )
            result = self.run_step(model, step, sub)
            self.files.update(r.path for r in (result, *result.alternatives))
            self.built[key] = result
        return result

    def _measure(self, cid: str, cand: space.Candidate, artifacts: list[StepOutput]) -> list[Evaluated]:
        loaded, load_s = [], []
        for a in artifacts:
            t = time.monotonic()
            loaded.append(self.ctx.load_artifact(a.path, a.runtime))
            load_s.append(time.monotonic() - t)
            self.check()
        t = time.monotonic()
        # a point is judged by quality and speed; a language model's speed is its decoding (objective.speed_gain),
        # timed here on fewer tokens than the final measurement's: it only ranks the candidates
        timing = {"generation": self.language_model, "new_tokens": min(SCREENING_NEW_TOKENS, self.quick.new_tokens)}
        ms, rs = measure_models(
            [self.model, *loaded],
            self.validation.val,
            self.quick.model_copy(update=timing),
            progress=lambda f, s: self.on_stage(cid, cand.label, f"measuring: {s}"),
        )
        measure_s = (time.monotonic() - t) / (len(loaded) + 1)
        del loaded
        # each inductor candidate compiles new graphs; dropping dynamo's caches keeps a long search's memory flat
        torch._dynamo.reset()
        self.base = self.base or ms[0]
        found = []
        for i, (a, m, r) in enumerate(zip(artifacts, ms[1:], rs[1:])):
            drop = quality_drop(ms[0], m)
            point = Point(f"{cid}-{runtime_of(a)}", drop, speed_gain(r, self.language_model), r.size_ratio)
            found.append(Evaluated(point.key, cand, a, runtime_of(a), m, r, point, load_s[i], measure_s))
        return found


def recipe_key(steps) -> str:
    """Identifies a list of steps: a candidate already tried, a prefix already built."""
    return json.dumps([s.model_dump(mode="json") for s in steps], sort_keys=True)


def runtime_of(result: StepOutput) -> str:
    if result.runtime:
        return result.runtime
    by_format = {ModelFormat.ONNX: Runtime.ONNXRUNTIME, ModelFormat.OPENVINO: Runtime.OPENVINO}
    return by_format.get(result.format, Runtime.EAGER)
