"""The student's training loop: cached (or live) teacher outputs, optional feature matching, AdamW or
SGD with warm-up and cosine decay, AMP on CUDA, validation with the best epoch kept, early stopping,
and a checkpoint after every epoch from which an interrupted run resumes exactly."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..contract.errors import RecipeError
from ..contract.recipe.distill import DistillStep
from ..data import Dataset
from ..measure.metrics import all_tensors, first_tensor, outputs_over
from ..training import fp32_weights, is_classifier, task_loss
from .losses import distillation_loss

TEACHER_BATCH = 256


@dataclass
class Phase:
    """One training run: `kd` (distillation) or `labels` (the same student on the labels alone)."""

    name: str
    checkpoint: Path | None
    on_checkpoint: Callable[[Path], None] = lambda path: None
    progress: Callable[[float, str], None] = lambda fraction, stage: None


@dataclass
class TrainingOutcome:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_metric: float | None = None
    resumed_from: int | None = None
    stopped_early: bool = False


def teacher_outputs(teacher: nn.Module, data: Dataset, device: str) -> torch.Tensor:
    """The teacher's (first) output over the data, computed once (float32, on the CPU)."""
    return every_output(teacher, data, device)[0]


def every_output(teacher: nn.Module, data: Dataset, device: str) -> list[torch.Tensor]:
    """Each of the teacher's outputs over the data (a face model's box, landmarks and score), float32 on the CPU."""
    return outputs_over(teacher, data.x, TEACHER_BATCH, device)


def shift_images(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/8 of the size (reflect padding): a mild augmentation for any image size."""
    if x.ndim != 4 or not x.is_floating_point():
        return x
    h, w = x.shape[-2:]
    ph, pw = max(1, h // 8), max(1, w // 8)
    padded = F.pad(x, (pw, pw, ph, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    dy = int(torch.randint(0, 2 * ph + 1, (1,), generator=generator))
    dx = int(torch.randint(0, 2 * pw + 1, (1,), generator=generator))
    return padded[..., dy : dy + h, dx : dx + w]


class FeatureTaps:
    """Captures named layers' outputs during forward passes."""

    def __init__(self, module: nn.Module, names: list[str]):
        self.values: dict[str, torch.Tensor] = {}
        self.hooks = []
        for name in names:
            try:
                layer = module.get_submodule(name)
            except AttributeError:
                raise RecipeError(f"no layer named {name!r} for feature matching") from None
            self.hooks.append(layer.register_forward_hook(lambda m, a, out, name=name: self._keep(name, out)))

    def _keep(self, name: str, out) -> None:
        self.values[name] = first_tensor(out)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def projection(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> nn.Module:
    """Maps a student feature onto the teacher's channels (FitNets' regressor): 1x1 conv or linear."""
    if student_feature.ndim == 4:
        return nn.Conv2d(student_feature.shape[1], teacher_feature.shape[1], 1)
    return nn.Linear(student_feature.shape[-1], teacher_feature.shape[-1])


def _match(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if s.ndim == 4 and s.shape[-2:] != t.shape[-2:]:
        s = F.adaptive_avg_pool2d(s, t.shape[-2:])
    return F.mse_loss(s, t)


def fingerprint(step: DistillStep, phase: str, samples: int) -> str:
    raw = json.dumps([step.model_dump(mode="json"), phase, samples], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def train(
    student: nn.Module,
    teacher: nn.Module | None,
    train_data: Dataset,
    val_data: Dataset | None,
    step: DistillStep,
    phase: Phase,
    device: str,
    vocabulary: int | None = None,
) -> TrainingOutcome:
    """Trains `student` in place and leaves it at its best validation epoch. `teacher` None trains on
    the labels alone. The student trains in fp32 and keeps its dtype after (training.fp32_weights)."""
    with fp32_weights(student):
        return _train(student, teacher, train_data, val_data, step, phase, device, vocabulary)


def _train(
    student, teacher, train_data, val_data, step: DistillStep, phase: Phase, device: str, vocabulary: int | None
) -> TrainingOutcome:
    student.to(device)
    use_teacher = teacher is not None
    live_teacher = use_teacher and (step.augment or bool(step.features))
    cached = every_output(teacher, train_data, device) if use_teacher and not live_teacher else None
    val_reference = teacher_outputs(teacher, val_data, device) if use_teacher and val_data is not None else None
    if val_data is not None and val_data.y is None and val_reference is None:
        raise RecipeError("training without labels needs a teacher to validate against")

    taps_s = FeatureTaps(student, [p.student for p in step.features]) if step.features else None
    taps_t = FeatureTaps(teacher, [p.teacher for p in step.features]) if step.features else None
    projections = nn.ModuleList()
    if step.features:
        with torch.no_grad():
            x = train_data.x[:2].to(device)
            teacher(x), student.eval()(x)
        for pair in step.features:
            projections.append(projection(taps_s.values[pair.student], taps_t.values[pair.teacher]))
        projections.to(device)

    params = [
        p for p in [*student.parameters(), *projections.parameters()] if p.requires_grad and p.is_floating_point()
    ]
    if step.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=step.learning_rate, momentum=0.9, nesterov=True, weight_decay=step.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=step.learning_rate, weight_decay=step.weight_decay)
    per_epoch = math.ceil(len(train_data) / step.batch_size)
    total, warmup = step.epochs * per_epoch, int(step.warmup_epochs * per_epoch)

    def lr_factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    amp_dtype = _amp_dtype(step.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    outcome = TrainingOutcome()
    best_state = None
    start = 0
    print_fp = fingerprint(step, phase.name, len(train_data))
    if phase.checkpoint is not None and phase.checkpoint.is_file():
        saved = torch.load(phase.checkpoint, weights_only=True, map_location=device)
        if saved.get("fingerprint") == print_fp:
            student.load_state_dict(saved["student"])
            projections.load_state_dict(saved["projections"])
            optimizer.load_state_dict(saved["optimizer"])
            schedule.load_state_dict(saved["schedule"])
            torch.set_rng_state(saved["rng"])
            best_state = saved["best_state"]
            outcome.history = json.loads(saved["history"])
            outcome.best_epoch, outcome.best_metric = saved["best_epoch"], saved["best_metric"]
            start = outcome.resumed_from = saved["epoch"]
            phase.progress(start / step.epochs, f"resumed from epoch {start}")

    for epoch in range(start, step.epochs):
        if stale_epochs_exceeded(step, outcome, epoch):
            outcome.stopped_early = True
            break
        student.train()
        g = torch.Generator().manual_seed(step.seed * 100_003 + epoch)
        order = torch.randperm(len(train_data), generator=g)
        running, count = 0.0, 0
        for i in range(0, len(train_data), step.batch_size):
            idx = order[i : i + step.batch_size]
            x = train_data.x[idx]
            if step.augment:
                x = shift_images(x, g)
            x = x.to(device)
            y = train_data.y[idx].to(device) if train_data.y is not None else None
            with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
                outs = [o.float() for o in all_tensors(student(x))]
                out = outs[0]
                if not use_teacher:
                    loss = F.cross_entropy(out, y)
                else:
                    if cached is not None:
                        t_outs = [c[idx].to(device) for c in cached]
                    else:
                        with torch.no_grad():
                            t_outs = [t.float() for t in all_tensors(teacher(x))]
                    loss = distillation_loss(
                        out,
                        t_outs[0],
                        y,
                        kind=step.loss,
                        temperature=step.temperature,
                        alpha=step.alpha,
                        output_loss=step.output_loss,
                        vocabulary=vocabulary,
                    )
                    # a model's other heads (landmarks, scores) follow the teacher's too
                    for s_out, t_out in zip(outs[1:], t_outs[1:]):
                        loss = loss + task_loss(s_out, None, t_out, vocabulary)
                    for proj, pair in zip(projections, step.features):
                        s_f = proj(taps_s.values[pair.student].float())
                        loss = loss + step.feature_weight * _match(s_f, taps_t.values[pair.teacher].float().detach())
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            schedule.step()
            running += loss.item() * len(idx)
            count += len(idx)
        record = {"epoch": epoch + 1, "loss": round(running / max(1, count), 5)}
        metric = validate(student, val_data, val_reference, device) if val_data is not None else None
        if metric is not None:
            record["val"] = round(metric, 5)
        outcome.history.append(record)
        if metric is None or outcome.best_metric is None or metric > outcome.best_metric:
            outcome.best_metric, outcome.best_epoch = metric, epoch + 1
            best_state = copy.deepcopy(student.state_dict())
        if phase.checkpoint is not None:
            _save(
                phase,
                {
                    "fingerprint": print_fp,
                    "epoch": epoch + 1,
                    "student": student.state_dict(),
                    "projections": projections.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": torch.get_rng_state(),
                    "best_state": best_state,
                    "best_epoch": outcome.best_epoch,
                    "best_metric": outcome.best_metric,
                    "history": json.dumps(outcome.history),
                },
            )
        # reported once the checkpoint is safe, so "epoch k" means a retry resumes after epoch k
        phase.progress(
            (epoch + 1) / step.epochs,
            f"epoch {epoch + 1}/{step.epochs}: loss {record['loss']:.4f}"
            + (f", validation {metric:.4f}" if metric is not None else ""),
        )
    if taps_s:
        taps_s.close()
        taps_t.close()
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    return outcome


def stale_epochs_exceeded(step: DistillStep, outcome: TrainingOutcome, epoch: int) -> bool:
    """Early stopping: `patience` epochs have passed since the best validation."""
    return step.patience is not None and outcome.best_metric is not None and epoch - outcome.best_epoch >= step.patience


@torch.no_grad()
def validate(student: nn.Module, data: Dataset, reference: torch.Tensor | None, device: str) -> float:
    """Accuracy on labels; otherwise agreement with the teacher (top-1, or cosine for other outputs)."""
    student.eval()
    outs = teacher_outputs(student, data, device)
    if data.y is not None and is_classifier(outs):
        return float((outs.argmax(1) == data.y).float().mean())
    if is_classifier(outs):
        return float((outs.argmax(1) == reference.argmax(1)).float().mean())
    return float(F.cosine_similarity(outs.flatten(1), reference.flatten(1), dim=1).mean())


def _amp_dtype(amp: str, device: str) -> torch.dtype | None:
    if device != "cuda" or amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _save(phase: Phase, state: dict) -> None:
    """Written to a temporary name and renamed, so a kill mid-write leaves the previous checkpoint."""
    phase.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    temp = phase.checkpoint.with_suffix(".tmp")
    torch.save(state, temp)
    os.replace(temp, phase.checkpoint)
    phase.on_checkpoint(phase.checkpoint)
