"""Runs the recipe's steps in order, each on a fresh copy of the previous step's model. A step that fails
after earlier ones keeps them: the run stops there and says why."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from ..contract.errors import EngineError, StepFailedError, without_paths
from ..contract.measure import MeasureSettings
from ..contract.report import Report
from ..contract.vocabulary import JobErrorCode
from ..methods import StepContext, StepOutput, run_step
from .prepare import Prepared

Progress = Callable[[float, str], None]
STEPS_SHARE = (0.05, 0.65)  # of the job's progress: the steps; measuring takes the rest


@dataclass
class Hooks:
    """Where a run reports to: progress, new checkpoints (the worker saves them away), a search's partial report."""

    progress: Progress = lambda fraction, stage: None
    on_checkpoint: Callable[[Path], None] = lambda path: None
    on_partial: Callable[[Report], None] = lambda report: None


@dataclass
class Ran:
    steps: list[tuple[BaseModel, StepOutput]] = field(default_factory=list)
    failure: str | None = None  # why the run stopped early; the steps before are still measured
    failure_code: JobErrorCode = JobErrorCode.STEP_FAILED


def run_steps(
    prepared: Prepared,
    out_dir: Path,
    settings: MeasureSettings,
    hooks: Hooks,
    models: dict[str, Path],
    checkpoint_dir: Path,
) -> Ran:
    ran, current = Ran(), None
    steps = prepared.recipe.steps
    start, share = STEPS_SHARE[0], STEPS_SHARE[1] - STEPS_SHARE[0]
    for i, step in enumerate(steps, start=1):
        lo, hi = start + share * (i - 1) / len(steps), start + share * i / len(steps)
        stage = f"step {i}/{len(steps)}: {step.method}"
        hooks.progress(lo, stage)

        def load_input(path=current) -> object:
            return prepared.load_original() if path is None else prepared.load_artifact(path)

        ctx = StepContext(
            out_dir=out_dir,
            index=i,
            method=step.method,
            data=prepared.data,
            eval_data=prepared.eval_data,
            models=models,
            checkpoint_dir=checkpoint_dir,
            on_checkpoint=hooks.on_checkpoint,
            device=settings.device,
            progress=lambda f, s, lo=lo, hi=hi, stage=stage: hooks.progress(lo + (hi - lo) * f, f"{stage}: {s}"),
            measure=settings,
            load_input=load_input,
            load_artifact=prepared.load_artifact,
            on_partial=hooks.on_partial,
        )
        try:
            output = run_step(load_input(), step, ctx)
        except Exception as e:  # library errors too: the job fails with the reason, never a crash
            reason = without_paths(e.message if isinstance(e, EngineError) else f"{type(e).__name__}: {e}")
            ran.failure = f"step {i} ({step.method}) failed: {reason}"
            ran.failure_code = e.code if isinstance(e, EngineError) else JobErrorCode.STEP_FAILED
            if not ran.steps:
                raise StepFailedError(ran.failure, code=ran.failure_code) from None
            # the earlier steps' artifacts are measured and kept; the job fails with this step's reason
            kept = f"the artifacts of steps 1-{i - 1} are kept" if i > 2 else "the artifact of step 1 is kept"
            ran.failure += f"; {kept}"
            break
        ran.steps.append((step, output))
        current = output.path
        if output.failure:  # what the step produced is measured and stored, then the job fails
            ran.failure = f"step {i} ({step.method}) failed: {output.failure}"
            break
    return ran
