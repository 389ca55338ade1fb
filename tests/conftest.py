from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.compression import MeasureSettings

from .digits import DigitsCNN, DigitsMLP, digits_arrays, train

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    x, y = digits_arrays()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train_idx, test_idx = order[:1400], order[1400:]
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def digits_npz(digits, workdir):
    _, _, x, y = digits
    path = workdir / "digits_test.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="session")
def cnn(digits):
    x, y, _, _ = digits
    return train(DigitsCNN(), x, y)


@pytest.fixture(scope="session")
def mlp(digits):
    x, y, _, _ = digits
    return train(DigitsMLP(), x, y, epochs=10)


def export_pt2(module, path, example):
    ep = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="session")
def cnn_pt2(cnn, workdir):
    return export_pt2(cnn, workdir / "cnn.pt2", torch.zeros(2, 1, 8, 8))


@pytest.fixture(scope="session")
def mlp_pt2(mlp, workdir):
    return export_pt2(mlp, workdir / "mlp.pt2", torch.zeros(2, 1, 8, 8))


@pytest.fixture
def quick():
    """Short timing: tests check behaviour, benchmarks check speed."""
    return MeasureSettings(batch=16, rounds=3, seconds_per_model=0.15, warmup=2, threads=2)
