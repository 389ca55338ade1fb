"""Runs a recipe on a model file in four stages a reader can hold one at a time: prepare (check and load
everything before any work), execute the steps, measure baseline and every artifact together, report.
The service's worker calls exactly this."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..contract.errors import StepFailedError
from ..contract.load import LoadOptions
from ..contract.measure import MeasureSettings
from ..contract.recipe import Recipe, parse_recipe
from ..contract.report import Report
from ..methods import report_entry_for
from ..results import build_report
from .execute import Hooks, Progress, run_steps
from .measure import measure_steps
from .prepare import prepare

__all__ = ["Hooks", "LoadOptions", "run", "run_recipe"]


def run(
    model_path: str | Path,
    recipe: Recipe,
    *,
    out_dir: str | Path,
    data_path: str | Path | None = None,
    eval_data_path: str | Path | None = None,
    load: LoadOptions | None = None,
    settings: MeasureSettings | None = None,
    hooks: Hooks | None = None,
    models: dict[str, str | Path] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> Report:
    """Returns the typed report and writes it, with every artifact, to `out_dir` (report.json).

    `models` maps the ids of other models a step names (a distillation student) to their files.
    Training steps checkpoint into `checkpoint_dir` (default `out_dir/checkpoints`) and resume from what
    they find there.

    A step that fails after earlier ones succeeded fails the run, but the earlier steps' artifacts are
    still measured and reported: the StepFailedError carries that report."""
    hooks, settings = hooks or Hooks(), settings or MeasureSettings()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hooks.progress(0.01, "loading model")
    prepared = prepare(
        Path(model_path),
        recipe,
        load or LoadOptions(),
        settings,
        Path(data_path) if data_path else None,
        Path(eval_data_path) if eval_data_path else None,
    )
    ran = run_steps(
        prepared,
        out_dir,
        settings,
        hooks,
        {k: Path(v) for k, v in (models or {}).items()},
        Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints",
    )
    base, measured = measure_steps(prepared, ran.steps, settings, hooks.progress)
    report = build_report(
        measured, base, prepared.spec, prepared.data, prepared.eval_data, entry_for=report_entry_for
    )
    if prepared.held_out is not None:
        report.eval_data.held_out_fraction = prepared.held_out
    report.failed = ran.failure
    (out_dir / "report.json").write_text(report.model_dump_json(indent=2))
    if ran.failure:
        raise StepFailedError(ran.failure, code=ran.failure_code, report=report)
    hooks.progress(1.0, "done")
    return report


def run_recipe(
    model_path: str | Path,
    recipe: dict | Recipe,
    *,
    out_dir: str | Path,
    data_path: str | Path | None = None,
    eval_data_path: str | Path | None = None,
    load: LoadOptions | dict | None = None,
    settings: MeasureSettings | None = None,
    progress: Progress | None = None,
    models: dict[str, str | Path] | None = None,
    checkpoint_dir: str | Path | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    on_partial: Callable[[Report], None] | None = None,
) -> Report:
    """The library's entry point: a recipe as JSON or typed, hooks as plain callables; returns the typed
    report (`report.model_dump(mode="json")` is report.json, docs/measurement.md)."""
    hooks = Hooks()
    for name, hook in (("progress", progress), ("on_checkpoint", on_checkpoint), ("on_partial", on_partial)):
        if hook is not None:
            setattr(hooks, name, hook)
    report = run(
        model_path,
        parse_recipe(recipe),
        out_dir=out_dir,
        data_path=data_path,
        eval_data_path=eval_data_path,
        load=LoadOptions.model_validate(load or {}),
        settings=settings,
        hooks=hooks,
        models=models,
        checkpoint_dir=checkpoint_dir,
    )
    return report
