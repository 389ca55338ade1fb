"""Writes the README's example inputs: a digits CNN trained in seconds (`digits.pt2`) and its test
split with labels (`digits.npz`).

    .venv/bin/python bench/digits_example.py out/
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.digits import DigitsCNN, accuracy, digits_arrays, train  # noqa: E402


def write_digits(folder: Path) -> tuple[Path, Path, float]:
    """Trains the CNN; writes the program and the labelled test split. Returns both paths and the accuracy."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1400], order[1400:]
    model = train(DigitsCNN(), x[tr], y[tr])
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(program, str(folder / "digits.pt2"))
    np.savez(folder / "digits.npz", x=x[te], y=y[te])
    return folder / "digits.pt2", folder / "digits.npz", accuracy(model, x[te], y[te])


def main(folder: Path) -> None:
    model, data, acc = write_digits(folder)
    print(f"wrote {model} (test accuracy {acc:.3f}) and {data}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out"))
