"""The quality rule, in one place: how a model is scored against the original, and what "within the accuracy
budget" means. The quantization guard, the recovery and distillation validation, the measurement, `auto`'s
search and the report's verdicts all call this module, so the figure a budget was checked on is the figure
the report shows (docs/measurement.md, "Quality").

Per output, by what it is:
- labels given, and class scores → accuracy on the labels (the first output);
- class scores → top-1 agreement with the original. A single 2-D output of two or more columns is class
  scores (a 2-class face/no-face head is judged by agreement, not by cosine); beside other outputs, only rows
  of probabilities or a wide row (≥ CLASSIFIER_COLUMNS) are;
- a detector's box head → mAP50 against the original's detections (measure/detection.py);
- anything else (regression, embeddings, landmarks) → cosine similarity.
Where the original predicts one class for nearly every sample (≥ DEGENERATE_TOP1_SHARE: a model far from its
data), agreement cannot tell candidates apart, so class scores are judged by the lower of agreement and cosine.
Several outputs: the worst. A causal language model's perplexity and next-token agreement are set by the
measurement (measure/__init__.py); it is judged by its perplexity.

The drop is the original's score minus the candidate's (accuracy when both have labels' accuracy, else
1 - agreement); for a causal language model, the relative perplexity increase (`perplexity_drop`). A result
is within a budget when its drop is at most the budget."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..contract.measure import OutputQuality
from .detection import detection_agreement, is_yolo_head

CLASSIFIER_COLUMNS = 100  # beside other outputs, a head this wide is class logits; narrower ones are values
DEGENERATE_TOP1_SHARE = 0.9  # an original this one-sided makes top-1 agreement uninformative
TOLERANCE = 1e-9  # a drop equal to the budget is within it, whatever the float rounding


# ------------------------------------------------------------------ the budget (plain arithmetic)


def drop(base_accuracy: float | None, accuracy: float | None, agreement: float | None) -> float:
    """Quality lost against the original: accuracy when both have labels' accuracy, else disagreement."""
    if base_accuracy is not None and accuracy is not None:
        return base_accuracy - accuracy
    return 1.0 - agreement if agreement is not None else math.inf


def perplexity_drop(base_perplexity: float, perplexity: float) -> float:
    """A causal language model's drop: the relative perplexity increase (0.05 = 5 % higher than the
    original's), what its users budget in; `max_accuracy_drop` is read that way for such a model."""
    if not (math.isfinite(perplexity) and math.isfinite(base_perplexity)) or base_perplexity <= 0:
        return math.inf
    return perplexity / base_perplexity - 1.0


def measured_drop(base, m) -> float | None:
    """The drop between two Measurements (the original's and a candidate's); None when neither scores it.
    A language model measured with perplexity on both sides is judged by its relative increase."""
    if base.perplexity is not None and m.perplexity is not None:
        return perplexity_drop(base.perplexity, m.perplexity)
    if m.agreement is None and (base.accuracy is None or m.accuracy is None):
        return None
    return drop(base.accuracy, m.accuracy, m.agreement)


def budget_words(budget: float, language_model: bool) -> str:
    """The budget as a reader takes it: points of accuracy, or a language model's perplexity increase."""
    return f"perplexity budget of +{budget * 100:.3g} %" if language_model else f"accuracy budget of {budget * 100:.3g} points"


def lost_words(drop: float, language_model: bool) -> str:
    return f"{drop * 100:+.2f} % perplexity" if language_model else f"{drop * 100:.2f} points"


def within_budget(lost: float | None, budget: float) -> bool:
    """An unscored result (no data to score it on) is not held against the budget."""
    return lost is None or lost <= max(budget, 0.0) + TOLERANCE


# ------------------------------------------------------------------ scoring outputs


def is_class_scores(t: torch.Tensor, alone: bool = True) -> bool:
    """Rows of class scores: any 2-D output of two or more columns when it is the model's only one; beside
    other outputs (boxes, landmarks), only rows of probabilities or a wide row of logits."""
    if t.ndim != 2 or t.shape[1] < 2:
        return False
    if alone:
        return True
    probabilities = bool((t >= 0).all()) and bool(((t.sum(1) - 1).abs() < 1e-3).all())
    return probabilities or t.shape[1] >= CLASSIFIER_COLUMNS


def degenerate_share(reference: torch.Tensor) -> float:
    """The share of samples on which the original predicts its most common class."""
    top = reference.argmax(1)
    return float(top.bincount().max()) / max(1, len(top))


def _finite_rows(o: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(o.float().flatten(1)).all(1)


def cosine(o: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-sample cosine; a row with NaN or inf (an fp16 overflow) counts as 0, not as missing."""
    each = F.cosine_similarity(o.float().flatten(1), b.float().flatten(1), dim=1, eps=1e-12)
    return float(torch.where(_finite_rows(o), each, torch.zeros_like(each)).mean())


def top1(o: torch.Tensor, b: torch.Tensor) -> float:
    """Top-1 agreement; a row with NaN or inf disagrees (argmax would put it on class 0)."""
    return float(((o.argmax(1) == b.argmax(1)) & _finite_rows(o)).float().mean())


def output_score(o: torch.Tensor, b: torch.Tensor, x: torch.Tensor | None, alone: bool) -> tuple[str, str, float]:
    """(kind, metric, score) of one output against the original's."""
    detection = detection_agreement(o, b, x) if x is not None else None
    if detection is not None:
        return "boxes", f"mAP50 vs the original's {detection[1]} detections", detection[0]
    if is_class_scores(b, alone):
        agreement = top1(o, b)
        if degenerate_share(b) >= DEGENERATE_TOP1_SHARE:
            return "classifier", "top1 and cosine (the original predicts one class)", min(agreement, cosine(o, b))
        return "classifier", "top1", agreement
    return "values", "cosine", cosine(o, b)


@dataclass(frozen=True)
class Quality:
    """One model's quality against the original. `score` is what the budget is checked on: accuracy on
    labels, else `agreement` (the worst output's, by its own metric)."""

    accuracy: float | None
    agreement: float | None
    metric: str | None
    cosine: float | None
    outputs: list[OutputQuality] | None  # per output, when there are several or one is a box head

    @property
    def score(self) -> float:
        if self.accuracy is not None:
            return self.accuracy
        return self.agreement if self.agreement is not None else 0.0


def score(
    outs: list[torch.Tensor],
    reference: list[torch.Tensor] | None,
    x: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> Quality:
    """Every output of a model against the original's (`reference`; None for the original itself, which then
    has only its accuracy), by the rule above."""
    first = outs[0]
    accuracy = None
    if labels is not None and is_class_scores(first):
        accuracy = float((first.argmax(1) == labels.to(first.device)).float().mean())
    if reference is None:
        return Quality(accuracy, None, None, None, None)
    if len(outs) != len(reference) or any(o.shape != b.shape for o, b in zip(outs, reference)):
        # another number of outputs, or another layout of the same values ([N, 1, C] for [N, C]): the first
        # output is scored alone, as the original's shape; nothing comparable scores 0
        if outs[0].numel() != reference[0].numel():
            return Quality(accuracy, 0.0, "outputs of another number or shape than the original's", None, None)
        outs, reference = [outs[0].reshape(reference[0].shape)], reference[:1]
    several = len(outs) > 1 or (x is not None and is_yolo_head(reference[0], x))
    per_output = []
    for k, (o, b) in enumerate(zip(outs, reference)):
        kind, metric, value = output_score(o, b, x, alone=not several)
        per_output.append(
            OutputQuality(
                index=k,
                shape=[None, *b.shape[1:]],
                kind=kind,
                metric=metric,
                agreement=value,
                relative_error=float((o.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)),
            )
        )
    worst = min(per_output, key=lambda q: q.agreement)
    metric = worst.metric if len(per_output) == 1 else f"{worst.metric} (output {worst.index}, worst of {len(outs)})"
    return Quality(
        accuracy,
        worst.agreement,
        metric,
        cosine(first, reference[0]),
        per_output if several else None,
    )
