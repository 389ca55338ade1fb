"""Recovery training and gradient passes over a job's dataset, shared by the methods that train.

The objective is the task loss on labels when the dataset has them; without labels the model learns
to reproduce a frozen reference (the model before it was changed), so training works on unlabeled data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .measure.metrics import all_tensors, first_tensor


def is_classifier(output: torch.Tensor) -> bool:
    return output.ndim == 2 and output.shape[1] > 1


def batches(data: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[tuple]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)) if shuffle else None
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size] if order is not None else slice(i, i + batch_size)
        yield data.x[idx], (data.y[idx] if data.y is not None else None)


def task_loss(output: torch.Tensor, labels: torch.Tensor | None, reference: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy on labels; otherwise distillation: KL to the reference's softmax for classifiers,
    mean squared error on other outputs."""
    if labels is not None and is_classifier(output):
        return F.cross_entropy(output, labels)
    if reference is None:
        raise ValueError("training without labels needs a reference model")
    if is_classifier(output):
        return F.kl_div(F.log_softmax(output, 1), F.log_softmax(reference, 1), log_target=True, reduction="batchmean")
    return F.mse_loss(output, reference)


def gradient_loss(output: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The loss whose gradients score weights (Taylor importance). Without labels a classifier's own
    predictions stand in (the unchanged model has zero distillation loss, hence zero gradient); other
    outputs use their energy, so a weight's score is its effect on the output."""
    if is_classifier(output):
        targets = labels if labels is not None else output.detach().argmax(1)
        return F.cross_entropy(output, targets)
    return output.pow(2).mean()


def accumulate_gradients(model: nn.Module, data: Dataset, *, batch_size: int, max_batches: int, device: str) -> None:
    """Leaves the summed gradients of `gradient_loss` over the first batches in each parameter's .grad."""
    model.zero_grad(set_to_none=True)
    model.eval()  # scores the model as it will run; batch norm statistics stay put
    for n, (x, y) in enumerate(batches(data, batch_size, shuffle=True, seed=1)):
        if n >= max_batches:
            break
        output = first_tensor(model(x.to(device))).float()
        gradient_loss(output, None if y is None else y.to(device)).backward()


def finetune(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    device: str,
    reference: nn.Module | None = None,
    progress: Callable[[float, str], None] = lambda fraction, stage: None,
    seed: int = 0,
) -> list[float]:
    """Trains in place with AdamW and a cosine learning-rate decay; returns the mean loss per epoch."""
    labelled = data.y is not None
    if not labelled and reference is None:
        raise ValueError("fine-tuning without labels needs a reference model")
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    steps = epochs * math.ceil(len(data) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    if reference is not None:
        reference.eval()
    losses = []
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for x, y in batches(data, batch_size, shuffle=True, seed=seed + epoch):
            x = x.to(device)
            outputs = [o.float() for o in all_tensors(model(x))]
            refs: list[torch.Tensor] = []
            if reference is not None and (not labelled or len(outputs) > 1):
                with torch.no_grad():
                    refs = [r.float() for r in all_tensors(reference(x))]
            # the labels score the first output; every other output (boxes, landmarks) keeps to the reference's
            loss = task_loss(outputs[0], None if y is None else y.to(device), refs[0] if refs else None)
            for output, ref in zip(outputs[1:], refs[1:]):
                loss = loss + task_loss(output, None, ref)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(x)
            count += len(x)
        losses.append(total / max(1, count))
        progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    model.eval()
    return losses


@torch.no_grad()
def quality(model: nn.Module, data: Dataset, reference_outputs: torch.Tensor | None, device: str) -> float:
    """Accuracy on labels, else top-1 agreement (classifiers) or cosine similarity with the reference."""
    outs = outputs(model, data, device)
    if data.y is not None and is_classifier(outs):
        return float((outs.argmax(1) == data.y).float().mean())
    if reference_outputs is None:
        raise ValueError("quality without labels needs the reference outputs")
    if is_classifier(outs):
        return float((outs.argmax(1) == reference_outputs.argmax(1)).float().mean())
    return float(F.cosine_similarity(outs.flatten(1), reference_outputs.flatten(1), dim=1).mean())


@torch.no_grad()
def outputs(model: nn.Module, data: Dataset, device: str) -> torch.Tensor:
    model.eval()
    return torch.cat([first_tensor(model(x.to(device))).float().cpu() for x, _ in batches(data, 256, shuffle=False)])
