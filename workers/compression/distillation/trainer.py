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
from ..contract.vocabulary import Device
from ..data import Dataset
from ..measure.metrics import all_tensors, first_tensor, outputs_over
from ..measure.quality import score
from ..training import fp32_weights, task_loss
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
                self.close()  # the hooks already placed come off: a bad name leaves the model as it was
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


class Teacher:
    """What the student learns from: the teacher's outputs over the training data, computed once (cached),
    or live per batch when the batches change (augmentation) or features are matched; and its outputs on
    the validation data. A None teacher trains on the labels alone."""

    def __init__(self, teacher: nn.Module | None, step: DistillStep, train_data: Dataset, val_data, device: str):
        self.module, self.device = teacher, device
        live = teacher is not None and (step.augment or bool(step.features))
        self.cached = every_output(teacher, train_data, device) if teacher is not None and not live else None
        self.on_val = (
            teacher_outputs(teacher, val_data, device) if teacher is not None and val_data is not None else None
        )
        if val_data is not None and val_data.y is None and self.on_val is None:
            raise RecipeError("training without labels needs a teacher to validate against")

    def outputs(self, idx: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        if self.cached is not None:
            return [c[idx].to(self.device) for c in self.cached]
        with torch.no_grad():
            return [t.float() for t in all_tensors(self.module(x))]


class FeatureMatching:
    """FitNets-style hints: named student layers regressed (through a learned projection) onto named teacher
    layers. Its forward hooks stay on the two models until `close()`."""

    def __init__(self, student: nn.Module, teacher: nn.Module, step: DistillStep, sample: torch.Tensor, device: str):
        self.pairs, self.weight = step.features, step.feature_weight
        self.student = FeatureTaps(student, [p.student for p in self.pairs])
        try:
            self.teacher = FeatureTaps(teacher, [p.teacher for p in self.pairs])
        except BaseException:
            self.student.close()
            raise
        try:
            self.projections = nn.ModuleList()
            with torch.no_grad():  # one pass to learn the features' shapes
                teacher(sample), student.eval()(sample)
            for pair in self.pairs:
                student_value, teacher_value = self.student.values[pair.student], self.teacher.values[pair.teacher]
                self.projections.append(projection(student_value, teacher_value))
            self.projections.to(device)
        except BaseException:  # the models keep no hook of a matching that never started
            self.close()
            raise

    def loss(self) -> torch.Tensor:
        """The weighted hint loss of the last forward pass of both models."""
        total = 0.0
        for proj, pair in zip(self.projections, self.pairs):
            s_f = proj(self.student.values[pair.student].float())
            total = total + self.weight * _match(s_f, self.teacher.values[pair.teacher].float().detach())
        return total

    def close(self) -> None:
        self.student.close()
        self.teacher.close()


class NoFeatures:
    projections = nn.ModuleList()

    def loss(self) -> float:
        return 0.0

    def close(self) -> None:
        pass


def _optimizer(step: DistillStep, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if step.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=step.learning_rate, momentum=0.9, nesterov=True, weight_decay=step.weight_decay
        )
    return torch.optim.AdamW(params, lr=step.learning_rate, weight_decay=step.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, step: DistillStep, samples: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the last step."""
    per_epoch = math.ceil(samples / step.batch_size)
    total, warmup = step.epochs * per_epoch, int(step.warmup_epochs * per_epoch)

    def lr_factor(i: int) -> float:
        if i < warmup:
            return (i + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


@dataclass
class Run:
    """Everything a training run changes, as saved in its checkpoint and resumed from it."""

    student: nn.Module
    features: FeatureMatching | NoFeatures
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    fingerprint: str
    amp_dtype: torch.dtype | None = None  # mixed precision on CUDA
    scaler: torch.amp.GradScaler | None = None  # fp16 needs its gradients scaled
    outcome: TrainingOutcome = field(default_factory=TrainingOutcome)
    best_state: dict | None = None

    def resume(self, checkpoint: Path | None, device: str) -> int:
        """The epoch to start at: after the checkpoint's, when it is this very run's (same fingerprint)."""
        if checkpoint is None or not checkpoint.is_file():
            return 0
        saved = torch.load(checkpoint, weights_only=True, map_location=device)
        if saved.get("fingerprint") != self.fingerprint:
            return 0
        self.student.load_state_dict(saved["student"])
        self.features.projections.load_state_dict(saved["projections"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved["schedule"])
        torch.set_rng_state(saved["rng"])
        self.best_state = saved["best_state"]
        self.outcome.history = json.loads(saved["history"])
        self.outcome.best_epoch, self.outcome.best_metric = saved["best_epoch"], saved["best_metric"]
        self.outcome.resumed_from = saved["epoch"]
        return saved["epoch"]

    def state(self, epoch: int) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "student": self.student.state_dict(),
            "projections": self.features.projections.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": torch.get_rng_state(),
            "best_state": self.best_state,
            "best_epoch": self.outcome.best_epoch,
            "best_metric": self.outcome.best_metric,
            "history": json.dumps(self.outcome.history),
        }

    def keep_if_best(self, epoch: int, metric: float | None) -> None:
        if metric is None or self.outcome.best_metric is None or metric > self.outcome.best_metric:
            self.outcome.best_metric, self.outcome.best_epoch = metric, epoch
            self.best_state = copy.deepcopy(self.student.state_dict())


def _train(
    student, teacher, train_data, val_data, step: DistillStep, phase: Phase, device: str, vocabulary: int | None
) -> TrainingOutcome:
    student.to(device)
    signal = Teacher(teacher, step, train_data, val_data, device)
    features = (
        FeatureMatching(student, teacher, step, train_data.x[:2].to(device), device) if step.features else NoFeatures()
    )
    try:
        params = [
            p
            for p in [*student.parameters(), *features.projections.parameters()]
            if p.requires_grad and p.is_floating_point()
        ]
        optimizer = _optimizer(step, params)
        run = Run(
            student,
            features,
            optimizer,
            _schedule(optimizer, step, len(train_data)),
            fingerprint(step, phase.name, len(train_data)),
            amp_dtype=(amp := _amp_dtype(step.amp, device)),
            scaler=torch.amp.GradScaler("cuda") if amp == torch.float16 else None,
        )
        start = run.resume(phase.checkpoint, device)
        if start:
            phase.progress(start / step.epochs, f"resumed from epoch {start}")
        for epoch in range(start, step.epochs):
            if stale_epochs_exceeded(step, run.outcome, epoch):
                run.outcome.stopped_early = True
                break
            loss = _epoch(run, signal, train_data, step, epoch, device, vocabulary)
            record = {"epoch": epoch + 1, "loss": round(loss, 5)}
            metric = validate(student, val_data, signal.on_val, device) if val_data is not None else None
            if metric is not None:
                record["val"] = round(metric, 5)
            run.outcome.history.append(record)
            run.keep_if_best(epoch + 1, metric)
            if phase.checkpoint is not None:
                _save(phase, run.state(epoch + 1))
            # reported once the checkpoint is safe, so "epoch k" means a retry resumes after epoch k
            phase.progress(
                (epoch + 1) / step.epochs,
                f"epoch {epoch + 1}/{step.epochs}: loss {record['loss']:.4f}"
                + (f", validation {metric:.4f}" if metric is not None else ""),
            )
    finally:
        features.close()  # the hooks come off the models whatever happened
    if run.best_state is not None:
        student.load_state_dict(run.best_state)
    student.eval()
    return run.outcome


def _epoch(
    run: Run, teacher: Teacher, data: Dataset, step: DistillStep, epoch: int, device: str, vocabulary: int | None
) -> float:
    """One pass over the data in a seeded order; the mean loss per sample."""
    run.student.train()
    amp_dtype, scaler = run.amp_dtype, run.scaler
    g = torch.Generator().manual_seed(step.seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=g)
    running, count = 0.0, 0
    for i in range(0, len(data), step.batch_size):
        idx = order[i : i + step.batch_size]
        x = shift_images(data.x[idx], g) if step.augment else data.x[idx]
        x = x.to(device)
        y = data.y[idx].to(device) if data.y is not None else None
        with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = _batch_loss(run, teacher, idx, x, y, step, vocabulary)
        run.optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(run.optimizer)
            scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        run.schedule.step()
        running += loss.item() * len(idx)
        count += len(idx)
    return running / max(1, count)


def _batch_loss(
    run: Run, teacher: Teacher, idx: torch.Tensor, x: torch.Tensor, y, step: DistillStep, vocabulary: int | None
) -> torch.Tensor:
    outs = [o.float() for o in all_tensors(run.student(x))]
    if teacher.module is None:
        return F.cross_entropy(outs[0], y)
    t_outs = teacher.outputs(idx, x)
    loss = distillation_loss(
        outs[0],
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
    return loss + run.features.loss()


def stale_epochs_exceeded(step: DistillStep, outcome: TrainingOutcome, epoch: int) -> bool:
    """Early stopping: `patience` epochs have passed since the best validation."""
    return step.patience is not None and outcome.best_metric is not None and epoch - outcome.best_epoch >= step.patience


@torch.no_grad()
def validate(student: nn.Module, data: Dataset, reference: torch.Tensor | None, device: str) -> float:
    """The student's score by the one quality rule (measure/quality.py): accuracy on labels, otherwise
    agreement with the teacher."""
    student.eval()
    outs = teacher_outputs(student, data, device)
    return score([outs], None if reference is None else [reference.float().cpu()], data.x, data.y).score


def _amp_dtype(amp: str, device: str) -> torch.dtype | None:
    if device != Device.CUDA or amp == "off":
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
