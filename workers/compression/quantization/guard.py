"""The accuracy guard: a quantized model must lose at most `max_accuracy_drop` (accuracy on labels,
agreement with the fp32 model without them; a causal language model's relative perplexity increase). When
it loses more, a per-layer sensitivity pass quantizes one layer at a time, and the fewest most sensitive
layers that make the budget hold go back to full precision (mixed precision; their number found by bisection). If even one quantized layer is too
many, the best candidate is returned with `met=False`: the step fails and stores it when the budget was the
recipe's, and keeps it with a note when it was the default (methods/quantize.py `guard_budget`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from ..data import Dataset
from ..formats.spec import LoadedModel
from ..measure import perplexity
from ..measure.metrics import outputs_over
from ..measure.quality import Quality, perplexity_drop, score, within_budget

GUARD_SAMPLES = 512  # enough to resolve a 0.5-point change; sensitivity runs once per layer
SCORE_BATCH = 64


class Built(Protocol):
    """One quantized candidate: callable on a batch, savable as an artifact."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def save(self, path: Path) -> Path: ...


Build = Callable[[frozenset[str], bool], Built]  # (layers kept in full precision, quick) -> candidate


@dataclass
class Scorer:
    """Quality on a fixed slice of data by the one quality rule (measure/quality.py): accuracy with labels,
    else agreement with the fp32 model, output by output, the worst counting (mAP50 for a box head). Scoring
    the first output alone let int8 ruin a face detector's landmarks (CenterFace's output 2) while every
    layer's sensitivity read 0.0, so the guard kept nothing in float."""

    x: torch.Tensor
    labels: torch.Tensor | None
    reference: list[torch.Tensor]  # every output of the fp32 model
    baseline: float = 0.0
    metric: str = "accuracy"

    language_model: tuple[str, ...] | None = None  # a causal LM's packed input names (() when unpacked)
    reference_perplexity: float = 0.0

    @classmethod
    def over(cls, data: Dataset, fp32: Callable[[torch.Tensor], torch.Tensor], model: LoadedModel | None = None) -> Scorer:
        """`model`, when it is a causal language model, is scored by its perplexity on the text, as the
        measurement judges it: quality is minus the relative increase, so the drop is that increase."""
        part = data.head(GUARD_SAMPLES)
        reference = _outputs(fp32, part.x)
        scorer = cls(part.x, part.y, reference)
        if model is not None and model.facts.task == "causal_lm":
            names = model.require_spec().names or ()
            if (ppl := perplexity(reference[0], part.x, names or None)) is not None:
                scorer.language_model, scorer.reference_perplexity = names, ppl
                scorer.metric = "relative perplexity increase"
                return scorer
        own = score(reference, reference, part.x, part.y)
        scorer.metric = _named(own)
        scorer.baseline = own.score
        return scorer

    def quality(self, outputs: list[torch.Tensor]) -> float:
        if self.language_model is not None:
            ppl = perplexity(outputs[0], self.x, self.language_model or None)
            return -perplexity_drop(self.reference_perplexity, math.inf if ppl is None else ppl)
        return score(outputs, self.reference, self.x, self.labels).score

    def __call__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> float:
        return self.quality(_outputs(model, self.x))


def _named(own: Quality) -> str:
    """What the guard's record calls its metric: accuracy, agreement (top-1), cosine, a box head's mAP50, or
    the worst of several outputs."""
    if own.accuracy is not None:
        return "accuracy"
    if own.outputs is not None:
        return own.outputs[0].metric if len(own.outputs) == 1 else f"worst of {len(own.outputs)} outputs"
    return "agreement" if (own.metric or "").startswith("top1") else "cosine"


def _outputs(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    return outputs_over(model, x, SCORE_BATCH)


@dataclass
class Guarded:
    built: Built
    quality: float
    kept: list[str]  # layers the guard returned to full precision, most sensitive first
    met: bool
    details: dict = field(default_factory=dict)


def guard(
    build: Build,
    layers: Sequence[str],
    scorer: Scorer,
    max_drop: float | None,
    *,
    kept: Sequence[str] = (),
    progress: Callable[[float, str], None] = lambda f, s: None,
) -> Guarded:
    """Quantizes every layer in `layers` except `kept`; then, if the drop exceeds `max_drop`, keeps the
    most sensitive layers in full precision until it does not."""
    kept = frozenset(kept)
    built = build(kept, False)
    quality = scorer(built)
    record = {"metric": scorer.metric, "baseline": scorer.baseline, "quantized_all": quality, "samples": len(scorer.x)}
    if max_drop is None or within_budget(scorer.baseline - quality, max_drop):
        return Guarded(built, quality, [], True, {**record, "budget": max_drop, "met": True})
    candidates = [name for name in layers if name not in kept]
    sensitivity = {}
    for i, name in enumerate(candidates):
        progress(i / len(candidates), f"sensitivity {i + 1}/{len(candidates)}: {name}")
        others = frozenset(candidates) - {name} | kept
        sensitivity[name] = scorer.baseline - scorer(build(others, True))
    order = sorted(candidates, key=lambda n: sensitivity[n], reverse=True)
    best = Guarded(built, quality, [], False)

    def keeping(k: int) -> Guarded:
        """The k most sensitive layers in full precision; the best quality seen is kept should none fit."""
        nonlocal best
        progress(k / len(order), f"keeping {k} most sensitive layer(s) in full precision")
        trial = build(kept | frozenset(order[:k]), False)
        q = scorer(trial)
        found = Guarded(trial, q, order[:k], within_budget(scorer.baseline - q, max_drop))
        if q > best.quality:
            best = found
        return found

    # the fewest layers that fit: quality grows with the layers kept back, near enough, so their number is
    # bisected (log2(n) full builds, not n: an OCR detector has ~90 layers); at least one stays quantized
    low, high = 1, len(order) - 1
    if high >= 1 and (fits := keeping(high)).met:
        while low < high:
            middle = (low + high) // 2
            if (trial := keeping(middle)).met:
                high, fits = middle, trial
            else:
                low = middle + 1
        best = fits
    best.details = {
        **record,
        "budget": max_drop,
        "met": best.met,
        "quality": best.quality,
        "sensitivity": {n: round(sensitivity[n], 6) for n in order},
        "kept_full_precision": best.kept,
    }
    return best
