"""A dataset as the engine holds it: the inputs `x` (several named inputs packed along dimension 1), the
labels `y` when there are any, and how it was made."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..contract.inspection import DatasetInfo, Tokenization


@dataclass
class Dataset:
    x: torch.Tensor
    y: torch.Tensor | None = None
    classes: list[str] | None = None  # image folders, text labels: the names, index = label
    # several named inputs packed along dimension 1 of x (see InputSpec), in this order
    names: tuple[str, ...] | None = None
    tokenization: Tokenization | None = None  # a text dataset: how it was tokenized (padding, truncation, length)

    def __len__(self) -> int:
        return len(self.x)

    def head(self, n: int) -> Dataset:
        return replace(self, x=self.x[:n], y=None if self.y is None else self.y[:n])

    def subset(self, idx: torch.Tensor) -> Dataset:
        return replace(self, x=self.x[idx], y=None if self.y is None else self.y[idx])

    def split(self, fraction: float, *, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(rest, held out): a random `fraction` of the samples held out, the same every run."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = len(self) - max(1, int(round(fraction * len(self))))
        return self.subset(order[:cut]), self.subset(order[cut:])

    def describe(self) -> DatasetInfo:
        return DatasetInfo(
            samples=len(self),
            sample_shape=list(self.x.shape[1:]),
            dtype=str(self.x.dtype).removeprefix("torch."),
            labels=self.y is not None,
            num_classes=int(self.y.max()) + 1 if self.y is not None else None,
            classes=self.classes,
            inputs=list(self.names) if self.names else None,
            tokenization=self.tokenization,
        )
