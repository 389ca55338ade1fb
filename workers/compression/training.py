"""Recovery training and gradient passes over a job's dataset, shared by the methods that train.

The objective is the task loss on labels when the dataset has them; without labels the model learns
to reproduce a frozen reference (the model before it was changed), so training works on unlabeled data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .measure.metrics import all_tensors, first_tensor
from .measure.quality import is_class_scores, score


def batches(data: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> Iterator[tuple]:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)) if shuffle else None
    for i in range(0, len(data), batch_size):
        idx = order[i : i + batch_size] if order is not None else slice(i, i + batch_size)
        yield data.x[idx], (data.y[idx] if data.y is not None else None)


def per_token(output: torch.Tensor, vocabulary: int | None) -> torch.Tensor:
    """A language model's logits [batch, tokens, vocabulary] as rows of class scores, one per token, so
    training matches the reference's next-token distributions (KL) as for a classifier. Mean squared
    error on raw logits drifted SmolLM2's distilled student past a uniform guess (perplexity 207k over a
    49k vocabulary). Other outputs pass unchanged: a hidden state [batch, tokens, width] is not logits,
    which is why the model's vocabulary size, not the shape alone, decides."""
    if vocabulary and output.ndim == 3 and output.shape[-1] == vocabulary:
        return output.flatten(0, 1)
    return output


def task_loss(
    output: torch.Tensor, labels: torch.Tensor | None, reference: torch.Tensor | None, vocabulary: int | None = None
) -> torch.Tensor:
    """Cross-entropy on labels; otherwise distillation: KL to the reference's softmax for classifiers
    and for a language model's tokens, mean squared error on other outputs."""
    if reference is not None and labels is None:
        output, reference = per_token(output, vocabulary), per_token(reference, vocabulary)
    if labels is not None and is_class_scores(output):
        return F.cross_entropy(output, labels)
    if reference is None:
        raise ValueError("training without labels needs a reference model")
    if is_class_scores(output):
        return F.kl_div(F.log_softmax(output, 1), F.log_softmax(reference, 1), log_target=True, reduction="batchmean")
    return F.mse_loss(output, reference)


def gradient_loss(output: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The loss whose gradients score weights (Taylor importance). Without labels a classifier's own
    predictions stand in (the unchanged model has zero distillation loss, hence zero gradient); other
    outputs use their energy, so a weight's score is its effect on the output."""
    if is_class_scores(output):
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


@contextmanager
def fp32_weights(model: nn.Module) -> Iterator[None]:
    """Trains a 16-bit checkpoint (SmolLM2 ships bf16) with fp32 weights and casts each tensor back to its
    dtype after, so the artifact is stored as the upload was. Updated in bf16 itself, AdamW's steps (a
    learning rate of 1e-4 against weights near 0.02) fall below the 8-bit mantissa's resolution and most
    are lost: the optimizer would run and the weights barely move."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    dtypes = {name: t.dtype for name, t in tensors if t.is_floating_point() and t.dtype != torch.float32}
    if not dtypes:
        yield
        return
    model.float()
    try:
        yield
    finally:
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name in dtypes:
                t.grad = None  # an fp32 gradient on a bf16 tensor fails torch.export later
                t.data = t.data.to(dtypes[name])


@dataclass
class BestEpoch:
    """Keeps the weights of the epoch that scored best on held-out data, epoch 0 being the model before any
    training: recovery never leaves a model worse, on data it did not train on, than it found it. On 160
    unlabelled photos, two recovery epochs after pruning MobileNetV2 ended at top-1 agreement 0.000."""

    score: Callable[[nn.Module], float]  # higher is better
    scores: list[float] = field(default_factory=list)
    epoch: int = 0
    _state: dict | None = None

    def see(self, model: nn.Module) -> None:
        value = self.score(model)
        if not self.scores or value > max(self.scores):
            self.epoch, self._state = len(self.scores), copy.deepcopy(model.state_dict())
        self.scores.append(value)

    def restore(self, model: nn.Module) -> None:
        if self._state is not None and self.epoch != len(self.scores) - 1:
            model.load_state_dict(self._state)
        self._state = None


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
    vocabulary: int | None = None,
    best: BestEpoch | None = None,
) -> list[float]:
    """Trains in place with AdamW and a cosine learning-rate decay, in fp32 whatever the weights' dtype;
    returns the mean loss per epoch. With `best`, the model is scored before training and after each
    epoch, and the best-scoring weights are the ones it ends with."""
    with fp32_weights(model):
        return _finetune(
            model, data, epochs, learning_rate, batch_size, device, reference, progress, seed, vocabulary, best
        )


def _finetune(
    model, data, epochs, learning_rate, batch_size, device, reference, progress, seed, vocabulary, best
) -> list[float]:
    labelled = data.y is not None
    if not labelled and reference is None:
        raise ValueError("fine-tuning without labels needs a reference model")
    params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    steps = epochs * math.ceil(len(data) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    if reference is not None:
        reference.eval()
    if best is not None:
        best.see(model)
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
            loss = task_loss(outputs[0], None if y is None else y.to(device), refs[0] if refs else None, vocabulary)
            for output, ref in zip(outputs[1:], refs[1:]):
                loss = loss + task_loss(output, None, ref)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(x)
            count += len(x)
        losses.append(total / max(1, count))
        if best is not None:
            best.see(model)
        progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    if best is not None:
        best.restore(model)
    model.eval()
    return losses


@torch.no_grad()
def quality(model: nn.Module, data: Dataset, reference_outputs: torch.Tensor | None, device: str) -> float:
    """The model's score by the one quality rule (measure/quality.py): accuracy on labels, else agreement
    with the reference's first output."""
    outs = outputs(model, data, device)
    q = score([outs], None if reference_outputs is None else [reference_outputs.float().cpu()], data.x, data.y)
    if q.accuracy is None and q.agreement is None:
        raise ValueError("quality without labels needs the reference outputs")
    return q.score


@torch.no_grad()
def outputs(model: nn.Module, data: Dataset, device: str) -> torch.Tensor:
    model.eval()
    return torch.cat([first_tensor(model(x.to(device))).float().cpu() for x, _ in batches(data, 256, shuffle=False)])
