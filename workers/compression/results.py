"""From measurements to the typed report: each artifact's entry (ratios, verdict and the reason in words),
the recommendation among one step's artifacts, and the whole `Report`. A method whose step offers more
than runtimes (auto's Pareto front) contributes its own entry (`report_entry` in its verb module)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .contract.measure import NOISY_WIDTH, Measurement, Ratios
from .contract.recipe.quantize import RECOMMEND_BUDGET
from .contract.report import ArtifactReport, Final, PeerComparison, Report, StepReport
from .contract.vocabulary import Verdict
from .data import Dataset
from .formats import InputSpec
from .measure.quality import budget_words, measured_drop, within_budget
from .step import StepOutput

SPEEDUP_THRESHOLD = 1.05  # below 5 % a latency change is within run-to-run noise
SIZE_THRESHOLD = 1.05
# a step without its own max_accuracy_drop still must not call an artifact that lost this much "faster and
# smaller": 10 points of accuracy (or of top-1 agreement, or 0.10 of cosine) is past any budget a user gives
QUALITY_LOST_DROP = 0.10


@dataclass(frozen=True)
class Measured:
    """One artifact a step produced, with what the measurement found."""

    output: StepOutput
    measurement: Measurement
    ratios: Ratios


def _speeds(r: Ratios, batch: int) -> list[tuple[str, str, float]]:
    """The speeds a verdict is judged on: a causal language model's decode tokens/s where they were measured
    (what its users wait for: SmolLM2's int8 `.pt2` ran a forward pass over a batch 1.04x as fast as the
    original, and decoded at 0.28x), else the latency at batch 1 and batch N."""
    if r.speedup_decode is not None:
        return [("decode", "decode", r.speedup_decode)]
    return [
        (key, label, s)
        for key, label, s in (("b1", "batch 1", r.speedup_b1), ("bN", f"batch {batch}", r.speedup_bN))
        if s is not None
    ]


def _speed_words(key: str, label: str) -> str:
    return "the original's decode tokens/s" if key == "decode" else f"the speed at {label}"


def inconclusive_reason(r: Ratios, batch: int) -> str | None:
    """Why the measurement cannot tell faster from slower: an interval wider than NOISY_WIDTH, or one that
    straddles 1.0 while the median claims a change."""
    for key, label, s in _speeds(r, batch):
        if key not in r.speedup_ci95:
            continue
        lo, hi = r.speedup_ci95[key]
        if lo <= 0 or hi / lo > NOISY_WIDTH:
            return (
                f"the {label} speedup's 95 % interval, {lo:.2f}x-{hi:.2f}x, spans more than a factor of {NOISY_WIDTH}"
            )
        claims_change = s >= SPEEDUP_THRESHOLD or s <= 1 / SPEEDUP_THRESHOLD
        if claims_change and lo < 1.0 < hi:
            return f"the {label} speedup's 95 % interval, {lo:.2f}x-{hi:.2f}x, includes 1.0: it may be no change"
    return None


def verdict(r: Ratios, batch: int = 0) -> Verdict:
    if inconclusive_reason(r, batch):
        return Verdict.INCONCLUSIVE
    speeds = [s for _, _, s in _speeds(r, batch)]
    faster = bool(speeds) and max(speeds) >= SPEEDUP_THRESHOLD and min(speeds) >= 1.0
    smaller = r.size_ratio >= SIZE_THRESHOLD
    gains = {
        (True, True): Verdict.FASTER_AND_SMALLER,
        (False, True): Verdict.SMALLER_ONLY,
        (True, False): Verdict.FASTER_ONLY,
    }
    return gains.get((faster, smaller), Verdict.NO_GAIN)


def quality_lost_reason(step, base: Measurement, m: Measurement) -> str | None:
    """Why an artifact's quality is lost, in words: its drop against the baseline is past the step's
    max_accuracy_drop, or past QUALITY_LOST_DROP for a step that has none. None while it holds."""
    drop = measured_drop(base, m)
    budget = getattr(step, "max_accuracy_drop", None)
    allowed = QUALITY_LOST_DROP if budget is None else max(budget, 0.0)
    if within_budget(drop, allowed):
        return None
    source = "the step's max_accuracy_drop" if budget is not None else "the default limit"
    if base.perplexity is not None and m.perplexity is not None:
        return (
            f"quality lost: perplexity {m.perplexity:.2f} against the original's {base.perplexity:.2f}, "
            f"{drop * 100:+.1f} %, more than {source} of +{allowed * 100:.3g} % (a language model's budget is its "
            "relative perplexity increase)"
        )
    if base.accuracy is not None and m.accuracy is not None:
        what = f"accuracy {m.accuracy:.3f} against the original's {base.accuracy:.3f}"
    else:
        what = f"{m.agreement_metric or 'agreement'} {m.agreement:.3f} with the original's outputs"
    return f"quality lost: {what}, a drop of {drop * 100:.1f} points, more than {source} of {allowed * 100:.3g}"


def _with_interval(s: float, ci: dict, key: str) -> str:
    if key in ci:
        lo, hi = ci[key]
        return f"{s:.2f}x (95 % {lo:.2f}-{hi:.2f}x)"
    return f"{s:.2f}x"


def verdict_reason(r: Ratios, m: Measurement, batch: int) -> str:
    """The measured facts behind the verdict, in words: size, then speed at each batch size, then the same
    against the original on this runtime, then why the figures are not to be trusted if they are not."""
    size = f"{r.size_ratio:.2f}x smaller" if r.size_ratio >= SIZE_THRESHOLD else f"size ratio {r.size_ratio:.2f}x"
    speeds = _speeds(r, batch)
    parts = [f"{_with_interval(s, r.speedup_ci95, key)} {_speed_words(key, label)}" for key, label, s in speeds]
    slower = [label for _, label, s in speeds if s < 1 / SPEEDUP_THRESHOLD]
    text = f"{size}; " + ", ".join(parts) + f" (runtime {m.runtime})"
    if (ref := r.reference) is not None:
        against = [
            _with_interval(s, ref.speedup_ci95, key)
            for key, s in (("b1", ref.speedup_b1), ("bN", ref.speedup_bN))
            if s is not None
        ]
        text += f"; {' / '.join(against)} against the same original model on {ref.runtime} fp32"
    if why := inconclusive_reason(r, batch):
        text += f"; inconclusive: {why}"
    elif slower:
        text += f"; slower than the baseline here at {' and '.join(slower)}"
    elif speeds and all(s < SPEEDUP_THRESHOLD for _, _, s in speeds):
        text += "; not faster than the baseline here"
    if r.noisy:
        text += "; noisy measurement: " + "; ".join(r.noise)
    return text


def ratio_notes(r: Ratios) -> list[str]:
    notes = []
    for label, s in (("batch 1", r.speedup_b1), ("the large batch", r.speedup_bN)):
        if s is not None and s < 1 / SPEEDUP_THRESHOLD:
            notes.append(f"slower than the baseline at {label}: {s:.2f}x")
    return notes


def speed_fields(r: Ratios) -> dict:
    """The ratio fields every report entry shares (ArtifactReport and Final)."""
    return {
        "size_ratio": r.size_ratio,
        "speedup_b1": r.speedup_b1,
        "speedup_bN": r.speedup_bN,
        "speedup_decode": r.speedup_decode,
        "speedup_prefill": r.speedup_prefill,
        "speedup_ci95": r.speedup_ci95,
        "rounds": r.rounds,
        "noisy": r.noisy,
        "noise": r.noise,
        "runtime_baseline": r.reference,
    }


def artifact_entry(step, measured: Measured, base: Measurement, batch: int, *, params: bool = True) -> ArtifactReport:
    out, m, r = measured.output, measured.measurement, measured.ratios
    lost = quality_lost_reason(step, base, m)
    reason = verdict_reason(r, m, batch)
    return ArtifactReport(
        method=step.method,
        params=step.model_dump(mode="json", exclude={"method"}) if params else None,
        artifact_id=out.path.name,
        format=out.format,
        measurement=m,
        **speed_fields(r),
        # speed and size are worth nothing on a model that no longer does its job: that verdict comes first
        verdict=Verdict.QUALITY_LOST if lost else verdict(r, batch),
        verdict_reason=f"{lost}; {reason}" if lost else reason,
        notes=[*out.notes, *ratio_notes(r)],
        details=out.details or None,
    )


def step_report(entry: ArtifactReport, **more) -> StepReport:
    return StepReport(**dict(entry), **more)


def speed_for(step, option: Measured) -> float:
    """The speed the step optimises for: batch 1 (`objective: latency`) or the larger batch (the default)."""
    r = option.ratios
    first, second = (
        (r.speedup_b1, r.speedup_bN) if getattr(step, "objective", None) == "latency" else (r.speedup_bN, r.speedup_b1)
    )
    return first if first is not None else (second or 0.0)


def recommend_runtime(step, base: Measurement, options: Sequence[Measured]) -> Measured:
    """Among one step's artifacts (one per runtime): the fastest at the batch size the step optimises for
    whose quality drop is within the step's budget (max_accuracy_drop, else 1 point); if none is, the most
    accurate."""
    if len(options) == 1:
        return options[0]
    budget = getattr(step, "max_accuracy_drop", None) or RECOMMEND_BUDGET
    drops = [(measured_drop(base, option.measurement), option) for option in options]
    within = [option for drop, option in drops if within_budget(drop, budget)]
    if within:
        return max(within, key=lambda o: speed_for(step, o))
    return min(drops, key=lambda pair: pair[0])[1]


def runtimes_entry(step, base: Measurement, options: Sequence[Measured], batch: int) -> StepReport:
    """The default entry: the step's artifact, or the recommended one of several runtimes beside the others;
    peers' artifacts (compare_peers) beside them, and the recommendation compared with the best peer."""
    own = [o for o in options if o.output.peer is None]
    peers = [o for o in options if o.output.peer is not None]
    chosen = recommend_runtime(step, base, own)
    entry = step_report(artifact_entry(step, chosen, base, batch))
    if len(own) > 1:
        entry.runtimes = [
            artifact_entry(step, o, base, batch, params=False).model_copy(update={"recommended": o is chosen})
            for o in own
        ]
        entry.recommended = entry.artifact_id
        which = "batch 1" if getattr(step, "objective", None) == "latency" else "the larger batch"
        entry.notes.append(
            f"measured {len(own)} runtimes ({', '.join(o.measurement.runtime for o in own)}); recommended: "
            f"{chosen.measurement.runtime}, the fastest at {which} within the accuracy budget"
        )
    if peers:
        entry.peers = [
            artifact_entry(step, o, base, batch, params=False).model_copy(update={"peer": o.output.peer}) for o in peers
        ]
        entry.against_peers = against_peers(step, base, chosen, peers)
        entry.notes.append(entry.against_peers.summary)
    return entry


def against_peers(step, base: Measurement, ours: Measured, peers: Sequence[Measured]) -> PeerComparison:
    """Ours against the better peer: the fastest at the step's batch size among those that keep quality
    within the step's budget (a peer that is fast because it broke the model is no bar: ORT quantize_static
    on MiniLM ran 2.4x faster than ours at cosine 0.51), the fastest of all when none does. Latency ratios
    at both sizes, and quality."""
    budget = getattr(step, "max_accuracy_drop", None) or RECOMMEND_BUDGET
    kept = [p for p in peers if within_budget(measured_drop(base, p.measurement), budget)]
    best = max(kept or peers, key=lambda p: speed_for(step, p))

    def ratio(key: str) -> float | None:
        mine, theirs = getattr(ours.ratios, f"speedup_{key}"), getattr(best.ratios, f"speedup_{key}")
        return mine / theirs if mine and theirs else None  # both against the same baseline, same run

    b1, bn = ratio("b1"), ratio("bN")
    drop, peer_drop = measured_drop(base, ours.measurement), measured_drop(base, best.measurement)
    quality_ok = drop is None or peer_drop is None or drop <= peer_drop + 0.005
    ahead = all(r is None or r >= 1.0 for r in (b1, bn)) and quality_ok
    words = ", ".join(f"{r:.2f}x at {label}" for label, r in (("batch 1", b1), ("the larger batch", bn)) if r)
    summary = (
        f"against the better peer, {best.output.peer} ({best.measurement.runtime}): {words} its speed "
        f"(above 1: ours faster); recommended runtime {ours.measurement.runtime}"
    )
    if not kept:
        summary += f"; no peer kept quality within the {budget_words(budget, base.perplexity is not None)}, so this is the fastest of them"
    elif len(kept) < len(peers):
        summary += "; the other peer lost quality past the budget"
    if not ahead:
        summary += "; the peer is ahead" + ("" if quality_ok else " on quality")
    return PeerComparison(
        best_peer=best.output.peer,
        peer_artifact_id=best.output.path.name,
        ratio_b1=b1,
        ratio_bN=bn,
        quality_drop=drop,
        peer_quality_drop=peer_drop,
        ahead=ahead,
        summary=summary,
    )


# a step's report entry from its measured artifacts: (step, baseline, artifacts, batch) -> entry
EntryBuilder = Callable[[object, Measurement, Sequence["Measured"], int], StepReport]


def build_report(
    steps: Sequence[tuple[object, Sequence[Measured]]],
    base: Measurement,
    spec: InputSpec,
    data: Dataset | None,
    eval_data: Dataset | None,
    *,
    entry_for: Callable[[object], EntryBuilder | None] = lambda step: None,
) -> Report:
    """`steps` is [(step config, its measured artifacts: the step's own first, then its alternatives)].
    `entry_for(step)` is the method's own report entry when it has one (auto: its front), else None: each
    step's artifacts are then one entry with its runtimes (`runtimes_entry`)."""
    batch = base.latency_ms.batch
    entries = [(entry_for(step) or runtimes_entry)(step, base, options, batch) for step, options in steps]
    final = entries[-1]
    fm = final.measurement
    accuracy_delta = fm.accuracy - base.accuracy if fm.accuracy is not None and base.accuracy is not None else None
    return Report(
        baseline=base,
        steps=entries,
        final=Final(
            artifact_id=final.artifact_id,
            size_ratio=final.size_ratio,
            speedup_b1=final.speedup_b1,
            speedup_bN=final.speedup_bN,
            speedup_decode=final.speedup_decode,
            speedup_prefill=final.speedup_prefill,
            speedup_ci95=final.speedup_ci95,
            rounds=final.rounds,
            noisy=final.noisy,
            noise=final.noise,
            runtime_baseline=final.runtime_baseline,
            accuracy_delta=accuracy_delta,
            agreement=fm.agreement,
            verdict=final.verdict,
            verdict_reason=final.verdict_reason,
            within_budget=final.within_budget,
            against_peers=final.against_peers,
        ),
        input=spec.info(),
        data=data.describe() if data is not None else None,
        eval_data=eval_data.describe() if eval_data is not None and eval_data is not data else None,
    )
