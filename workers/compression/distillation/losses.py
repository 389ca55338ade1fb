"""Distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..training import per_token


def soft_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al.: KL(softmax(t/T) || softmax(s/T)) * T^2, so its gradients keep their scale as T changes."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="batchmean"
    ) * (t * t)


def hard_kd(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The teacher's top-1 as the label."""
    return F.cross_entropy(student, teacher.argmax(1))


def output_match(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """For outputs that are not class scores: mean squared error, or 1 - cosine similarity per sample."""
    if kind == "cosine":
        return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()
    return F.mse_loss(student, teacher)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    kind: str,
    temperature: float,
    alpha: float,
    output_loss: str,
    vocabulary: int | None = None,
) -> torch.Tensor:
    """alpha * distillation term + (1 - alpha) * cross-entropy on the true labels when there are labels;
    the distillation term alone otherwise. A language model's logits are distilled token by token
    (training.per_token)."""
    if labels is None:
        student, teacher = per_token(student, vocabulary), per_token(teacher, vocabulary)
    classifier = student.ndim == 2 and student.shape[1] > 1
    if not classifier:
        return output_match(student, teacher, output_loss)
    term = soft_kd(student, teacher, temperature) if kind == "soft" else hard_kd(student, teacher)
    if labels is None:
        return term
    return alpha * term + (1 - alpha) * F.cross_entropy(student, labels)
