"""What every method (a verb of methods/) gets and returns: the step's context and its output. Below the
methods, so what a verb calls (quantization, the search, the report builder) can name them too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .contract.formats import FILE_SUFFIX, ModelFormat
from .contract.measure import MeasureSettings
from .contract.report import Report, SearchRecord
from .data import Dataset
from .formats.spec import LoadedModel


@dataclass
class StepContext:
    out_dir: Path
    index: int  # 1-based position in the recipe
    method: str
    data: Dataset | None = None  # the job's dataset (calibration / training), when there is one
    eval_data: Dataset | None = None  # what the measurement will score on (held out from `data` if trained)
    models: dict[str, Path] = field(default_factory=dict)  # other uploaded models a step names, by id
    # where training steps keep checkpoints, and who hears about a new one (the worker saves it away)
    checkpoint_dir: Path | None = None
    on_checkpoint: Callable[[Path], None] = lambda path: None
    device: str = "cpu"
    progress: Callable[[float, str], None] = lambda fraction, stage: None
    # for steps that build and measure many models (auto): how the job measures, a fresh copy of this
    # step's input, an artifact loaded as the job will load it (path, runtime), and where a report of
    # what was found so far goes (the worker keeps it, so a cancelled search keeps its results)
    measure: MeasureSettings | None = None
    load_input: Callable[[], LoadedModel] | None = None
    load_artifact: Callable[[Path, str | None], LoadedModel] | None = None
    on_partial: Callable[[Report], None] = lambda report: None
    # an int8 step without max_accuracy_drop is still guarded, against RECOMMEND_BUDGET and without failing
    # when that cannot hold (methods/quantize.py); auto's own candidates say when to guard, so it turns it off
    default_guard: bool = True

    def artifact_path(self, fmt: ModelFormat, tag: str = "") -> Path:
        name = f"step{self.index}_{self.method}{('_' + tag) if tag else ''}{FILE_SUFFIX[fmt]}"
        return self.out_dir / name


@dataclass
class StepOutput:
    """What a verb made: the artifact file, and what the report should say about it."""

    path: Path
    format: ModelFormat
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)  # method-specific facts for the report (layers kept, ...)
    runtime: str | None = None  # what must run the artifact to be measured as it is meant (inductor), else default
    # the same step's artifacts for other runtimes: all are measured, the fastest within budget is recommended
    alternatives: list[StepOutput] = field(default_factory=list)
    # set when the step could not do what was asked but produced something worth keeping (the best candidate
    # under an accuracy budget): the pipeline measures and stores it, then fails the job with this message
    failure: str | None = None
    search: SearchRecord | None = None  # auto: every candidate the search tried
    # a peer's artifact (the field's one-call recipe, quantization/peers.py): measured beside the step's own,
    # never recommended, compared with in the report
    peer: str | None = None
