"""Quality output by output: a detector's box head, landmarks and a score are each judged by what fits them
(mAP50 for a YOLOv8-style head, top-1 for class rows, cosine for values). Used by the measurement and by
the quantization guard, so the guard keeps layers in float for the same loss the report would show."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contract.measure import OutputQuality
from .detection import detection_agreement, is_yolo_head

CLASSIFIER_COLUMNS = 100  # a head this wide is class logits; narrower ones (boxes, landmarks) are values


def _classifier_like(t: torch.Tensor) -> bool:
    """Rows of probabilities, or a wide row of logits: top-1 agreement means something there."""
    if t.ndim != 2 or t.shape[1] < 2:
        return False
    probabilities = bool((t >= 0).all()) and bool(((t.sum(1) - 1).abs() < 1e-3).all())
    return probabilities or t.shape[1] >= CLASSIFIER_COLUMNS


def per_output_quality(
    outs: list[torch.Tensor], base: list[torch.Tensor] | None, x: torch.Tensor
) -> list[OutputQuality] | None:
    """Each output against the baseline's, for models with several or with a detector's box head."""
    if base is None or len(outs) != len(base):
        return None
    if len(outs) < 2 and not is_yolo_head(base[0], x):
        return None
    quality = []
    for k, (o, b) in enumerate(zip(outs, base)):
        if o.shape != b.shape:
            return None
        classifier = _classifier_like(b)
        detection = detection_agreement(o, b, x)
        if detection is not None:
            kind, metric, agreement = "boxes", f"mAP50 vs the original's {detection[1]} detections", detection[0]
        elif classifier:
            kind, metric, agreement = "classifier", "top1", float((o.argmax(1) == b.argmax(1)).float().mean())
        else:
            kind, metric = "values", "cosine"
            agreement = float(F.cosine_similarity(o.flatten(1), b.flatten(1), dim=1, eps=1e-12).mean())
        quality.append(
            OutputQuality(
                index=k,
                shape=[None, *b.shape[1:]],
                kind=kind,
                metric=metric,
                agreement=agreement,
                relative_error=float((o - b).norm() / b.norm().clamp_min(1e-12)),
            )
        )
    return quality
