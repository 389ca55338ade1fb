"""The job report (the README's `results`, docs/measurement.md; the engine CLI's report.json), typed. The
engine builds it, the child sends it, the worker validates it, stores its artifacts and swaps engine file
names for stored ids (`with_artifact_ids`), and the API documents it as `GET /v1/jobs/{id}`'s `results`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .formats import ModelFormat
from .inspection import DatasetInfo, InputInfo, Isolation
from .measure import Interval, Measurement, ReferenceRatios
from .vocabulary import CandidateStatus, Runtime, Verdict


def _omitted_when_none(description: str, default: Any = None) -> Any:
    """A section only some entries have (a step's runtimes, a search's front): absent, not null, when unset."""
    return Field(default, description=description, exclude_if=lambda v: v is None)


# the uncertainty fields every entry with speedups carries (an artifact, a step, `final`), declared once
SpeedupIntervals = Annotated[
    dict[str, Interval],
    Field(
        description="95 % interval of each speedup: {'b1': [low, high], 'bN': [low, high]}, and 'decode' / 'prefill' "
        "for a language model"
    ),
]
Rounds = Annotated[dict[str, int], Field(description="interleaved rounds behind each speedup")]
Noisy = Annotated[bool, Field(description="the speedups are not to be trusted as they stand; `noise` says why")]
RuntimeBaseline = Annotated[
    ReferenceRatios | None,
    _omitted_when_none(
        "the same ratios against the original model, fp32, on this artifact's runtime (when that differs from "
        "the uploaded model's): what compression bought apart from the runtime switch"
    ),
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactReport(_Section):
    """One measured artifact of a step, beside the baseline."""

    method: str
    params: dict[str, Any] | None = _omitted_when_none("the step's options as given in the recipe")
    artifact_id: str = Field(description="the stored artifact's id (in the engine's report.json: its file name)")
    format: ModelFormat
    measurement: Measurement
    size_ratio: float = Field(description="baseline size / this size")
    speedup_b1: float | None = Field(description="baseline latency / this latency at batch 1 (> 1 is faster)")
    speedup_bN: float | None = Field(description="the same at the larger batch")
    speedup_decode: float | None = _omitted_when_none("language models: decode tokens/s over the baseline's")
    speedup_prefill: float | None = _omitted_when_none("language models: prefill tokens/s over the baseline's")
    speedup_ci95: SpeedupIntervals = {}
    rounds: Rounds = {}
    noisy: Noisy = False
    noise: list[str] = []
    runtime_baseline: RuntimeBaseline = None
    verdict: Verdict
    verdict_reason: str
    notes: list[str] = []
    details: dict[str, Any] | None = _omitted_when_none("method-specific facts (layers kept, training history, ...)")
    recommended: bool | None = _omitted_when_none("among several artifacts of one step: the one recommended")
    peer: str | None = _omitted_when_none("a peer's artifact: the field's one-call recipe it was built with")


class PeerComparison(_Section):
    """The recommended artifact against the better peer (the field's one-call recipes, built and measured in
    the same run): each ratio is the peer's latency over ours, so above 1 is ours faster."""

    best_peer: str = Field(description="the peer that was fastest at the batch size the step optimises for")
    peer_artifact_id: str
    ratio_b1: float | None = Field(description="peer latency / ours at batch 1 (> 1: ours is faster)")
    ratio_bN: float | None = Field(description="the same at the larger batch")
    quality_drop: float | None = Field(description="ours: accuracy (or agreement) lost against the original")
    peer_quality_drop: float | None = Field(description="the peer's")
    ahead: bool = Field(description="ours is at least as fast at both batch sizes, at equal or better quality")
    summary: str = Field(description="the comparison in words, with the runtimes named")


class CandidateArtifact(_Section):
    """What a search measured of one artifact of a candidate."""

    candidate: str
    runtime: Runtime
    artifact: str | None = Field(description="the stored artifact (front members only; the others were deleted)")
    accuracy_drop: float
    speedup_b1: float | None
    speedup_bN: float | None
    speedup_decode: float | None = _omitted_when_none(
        "language models: decode tokens/s over the original's, what the search ranked it by"
    )
    size_ratio: float
    measurement: Measurement
    on_front: bool | None = _omitted_when_none("whether it made the Pareto front")


class Candidate(_Section):
    """One recipe a search tried, whatever became of it."""

    id: str
    label: str
    rung: str = Field(description="screen, guard, train or combine")
    recipe: list[dict[str, Any]]
    status: CandidateStatus | None = None
    reason: str | None = _omitted_when_none("why it failed, was skipped or stopped")
    seconds: float | None = _omitted_when_none("building and measuring it took")
    artifacts: list[CandidateArtifact] | None = _omitted_when_none("its measured artifacts")


class SearchRecord(_Section):
    """The whole search of an `auto` step."""

    notes: list[str]
    objective: str
    max_accuracy_drop: float
    budget_s: float
    search_s: float
    stopped: str | None
    validation: str
    quality: Literal["accuracy", "agreement", "cosine"]
    candidates: list[Candidate]
    front: list[str] = Field(description="the candidate ids on the front")


class StepReport(ArtifactReport):
    """A recipe step: its recommended artifact's entry, and every other artifact it offered."""

    recommended: str | None = _omitted_when_none("the recommended artifact's id, when the step offers several")
    runtimes: list[ArtifactReport] | None = _omitted_when_none("one artifact per runtime measured")
    peers: list[ArtifactReport] | None = _omitted_when_none("compare_peers: each peer's artifact, measured beside")
    against_peers: PeerComparison | None = _omitted_when_none("compare_peers: the recommendation against the best peer")
    front: list[ArtifactReport] | None = _omitted_when_none("auto: the Pareto front, measured again here")
    objective: str | None = _omitted_when_none("auto: what the recommendation optimises")
    within_budget: bool | None = _omitted_when_none("auto: whether the recommended artifact meets the accuracy budget")
    recommendation_reason: str | None = _omitted_when_none("auto: why this one")
    search: SearchRecord | None = _omitted_when_none("auto: every candidate tried")

    def artifacts(self) -> list[ArtifactReport]:
        """The step's own entry, then every other artifact it offers (runtimes, front), each once."""
        others = [
            a for a in [*(self.runtimes or []), *(self.front or []), *(self.peers or [])] if a.artifact_id != self.artifact_id
        ]
        return [self, *others]


class Final(_Section):
    artifact_id: str
    size_ratio: float
    speedup_b1: float | None
    speedup_bN: float | None
    speedup_decode: float | None = _omitted_when_none("language models: decode tokens/s over the baseline's")
    speedup_prefill: float | None = _omitted_when_none("language models: prefill tokens/s over the baseline's")
    speedup_ci95: SpeedupIntervals = {}
    rounds: Rounds = {}
    noisy: Noisy = False
    noise: list[str] = []
    runtime_baseline: RuntimeBaseline = None
    accuracy_delta: float | None
    agreement: float | None
    verdict: Verdict
    verdict_reason: str
    within_budget: bool | None = _omitted_when_none("auto: whether the accuracy budget was met")
    against_peers: PeerComparison | None = _omitted_when_none("the last step's comparison with the field's recipes")


# the shape of a stored report: rows written under another version are migrated (migrations/), so a reader
# never meets an older shape
REPORT_SCHEMA_VERSION = 1


class Report(_Section):
    """Baseline and every step measured in one run, on one machine."""

    schema_version: Literal[1] = Field(REPORT_SCHEMA_VERSION, description="the report format's version")
    baseline: Measurement
    steps: list[StepReport]
    final: Final
    input: InputInfo = Field(description="the input spec the model was measured with")
    data: DatasetInfo | None = Field(None, description="the dataset the steps used")
    eval_data: DatasetInfo | None = Field(None, description="what quality was scored on, when not `data`")
    failed: str | None = _omitted_when_none("a step failed after earlier ones: why (their artifacts are kept)")
    partial: bool | None = _omitted_when_none("a search's results while it still runs (or when it was stopped)")
    isolation: Isolation | None = _omitted_when_none("the sandbox the job ran in (set by the worker)")

    def with_artifact_ids(self, stored: Mapping[str, str]) -> Report:
        """A copy in which every artifact reference (an engine file name) is its stored id; a search's
        candidates whose files were not kept (off the front) point at None."""
        report = self.model_copy(deep=True)
        for step in report.steps:
            for entry in [step, *(step.runtimes or []), *(step.front or []), *(step.peers or [])]:
                entry.artifact_id = stored[entry.artifact_id]
            if step.against_peers is not None:
                step.against_peers.peer_artifact_id = stored[step.against_peers.peer_artifact_id]
            if step.recommended is not None:
                step.recommended = step.artifact_id
            for candidate in step.search.candidates if step.search else []:
                for found in candidate.artifacts or []:
                    found.artifact = stored.get(found.artifact) if found.artifact else None
        report.final.artifact_id = stored[report.final.artifact_id]
        if report.final.against_peers is not None:
            report.final.against_peers.peer_artifact_id = stored[report.final.against_peers.peer_artifact_id]
        return report


class PartialResults(_Section):
    """What a cancelled job holds instead of a report when its search had stored nothing yet."""

    schema_version: Literal[1] = REPORT_SCHEMA_VERSION


# a job's stored `results`: a report (whole, or a search's so far), or the empty mark of a cancelled search
STORED_RESULTS: TypeAdapter[Report | PartialResults] = TypeAdapter(
    Annotated[Report | PartialResults, Field(union_mode="left_to_right")]
)
