"""What the quantization backends build: a candidate (a quantized model that runs and saves), the backend
that builds it with some layers kept in full precision, the calibration batches, and the reduce_range
choice measured on the runtime that will run the model."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..contract.errors import short_error
from ..contract.recipe.quantize import QuantizeConfig
from ..data import Dataset
from ..formats import ModelFormat, save_model
from ..formats.onnx import OnnxModule
from ..formats.spec import InputSpec
from ..hardware import cpu_has_vnni
from ..training import batches
from .guard import Scorer

CALIBRATION_BATCH = 32


@dataclass
class TorchCandidate:
    """A quantized torch model: `saved` is what the artifact holds, `runner` what executes it."""

    saved: nn.Module
    spec: InputSpec
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (self.saved if self.runner is None else self.runner)(x)

    def save(self, path: Path) -> Path:
        return save_model(self.saved, self.spec, ModelFormat.PT2, path)


@dataclass
class OnnxCandidate:
    path: Path
    threads: int | None = None
    names: tuple[str, ...] | None = None  # the packed named inputs, in the run's order
    _session: OnnxModule | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            self._session = OnnxModule(self.path, threads=self.threads)
            if self.names:
                self._session.bind_inputs(self.names)
        return self._session(x)

    def save(self, path: Path) -> Path:
        shutil.copyfile(self.path, path)
        return path


@dataclass
class Backend:
    """One way to quantize this model: what runs the result, its file format, the layers it can keep in
    full precision, and how to build a candidate (layers kept, quick: skip training, cheap calibration).
    `groups` are parts of the graph that are not a layer but that the guard can keep in full precision as
    one, like a layer (an ONNX graph's ops without weights: onnx_int8.WEIGHTLESS_OPS)."""

    runtime: str
    format: ModelFormat
    layers: list[str]
    build: Callable[[frozenset[str], bool], object]
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    @property
    def candidates(self) -> list[str]:
        """What the accuracy guard may keep in full precision: the layers, then the groups."""
        return [*self.layers, *self.groups]


def on_each_runtime(items: list, attempt: Callable, failure: Callable[[object, str], str]) -> tuple[list, list[str]]:
    """`attempt(item)` for each runtime's item. With several, one that raises is described by
    `failure(item, error)` and the others go on (a runtime that cannot take a model leaves the others'
    artifacts); with one, its error is the step's. Returns the results and the failures."""
    done, failed = [], []
    for item in items:
        try:
            done.append(attempt(item))
        except MemoryError:
            raise
        except Exception as e:
            if len(items) == 1:
                raise
            failed.append(failure(item, short_error(e)))
    return done, failed


def calibration_batches(data: Dataset, batches_wanted: int, device: str) -> list[torch.Tensor]:
    out = []
    for x, _ in batches(data, CALIBRATION_BATCH, shuffle=True, seed=0):
        if len(out) >= batches_wanted:
            break
        out.append(x.to(device))
    return out


def choose_reduce_range(
    step: QuantizeConfig, build: Callable[[bool], object], scorer: Scorer | None
) -> tuple[bool, dict]:
    """Whether to use 7-bit activations: the user's choice; else off on CPUs with VNNI (no saturation);
    else both are built and scored on the runtime that will run them, and reduce_range is used only when
    it is more accurate."""
    if step.reduce_range is not None:
        return step.reduce_range, {"chosen": step.reduce_range, "why": "set by the recipe"}
    if cpu_has_vnni():
        return False, {"chosen": False, "why": "the CPU has VNNI: u8xs8 products do not saturate"}
    if scorer is None:
        return True, {"chosen": True, "why": "CPU without VNNI and no data to compare on"}
    full, reduced = scorer(build(False)), scorer(build(True))
    chosen = reduced > full
    return chosen, {
        "chosen": chosen,
        "quality_8bit_activations": full,
        "quality_7bit_activations": reduced,
        "why": "CPU without VNNI: both measured; "
        + ("7-bit activations were more accurate" if chosen else "8-bit held"),
    }
