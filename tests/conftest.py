from __future__ import annotations

import numpy as np
import pytest
import torch

from workers.compression import MeasureSettings

from .digits import DigitsCNN, DigitsMLP, digits_arrays, train
from .stack import threads_per_process

THREADS = threads_per_process()
torch.set_num_threads(THREADS)


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
def digits_train_npz(digits, workdir):
    """The labelled training split, for methods that train (recovery fine-tuning, distillation)."""
    x, y, _, _ = digits
    path = workdir / "digits_train.npz"
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture(scope="session")
def digits_unlabelled_npz(digits, workdir):
    """The training split without labels: training falls back to distillation from the model."""
    x, _, _, _ = digits
    path = workdir / "digits_unlabelled.npz"
    np.savez(path, x=x)
    return path


@pytest.fixture(scope="session")
def cnn(digits):
    x, y, _, _ = digits
    # seeded before the layers are made: their initial weights would otherwise depend on whatever drew random
    # numbers earlier in this process, so the trained model (and tests near a threshold) on the test order
    torch.manual_seed(0)
    return train(DigitsCNN(), x, y)


@pytest.fixture(scope="session")
def mlp(digits):
    x, y, _, _ = digits
    torch.manual_seed(0)
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
    """Short timing: tests check behaviour, benchmarks check speed. No fp32 reference on each artifact's
    runtime (a compile or an export each): the tests of that comparison turn it on."""
    return MeasureSettings(
        batch=16, rounds=3, max_rounds=8, seconds_per_model=0.15, warmup=2, threads=THREADS, runtime_baselines=False
    )


# ---------------------------------------------------------------- the service (real processes)

PROD_KEY = "sqz_test_default_key"


@pytest.fixture(scope="session")
def prod_stack(tmp_path_factory):
    """API + one worker on PostgreSQL + Redis + an S3-compatible blob store, as a deployment runs them.
    Fails (never skips) when PostgreSQL or Redis cannot be reached."""
    from tests.stack import S3Server, Stack, create_pg_database, drop_pg_database, pg_url, redis_db_url

    database = create_pg_database()
    home = tmp_path_factory.mktemp("prod")
    s3 = S3Server(home)
    stack = Stack(
        home,
        {
            **s3.env,
            "SQUEEZE_DATABASE_URL": pg_url(database),
            "SQUEEZE_BROKER_URL": redis_db_url(11),
            "SQUEEZE_BOOTSTRAP_API_KEY": PROD_KEY,
            "SQUEEZE_MAX_UPLOAD_BYTES": str(20 * 1024 * 1024),
        },
        api_key=PROD_KEY,
    )
    stack.s3 = s3
    try:
        stack.start_api()
        stack.start_worker("w1")
        yield stack
    finally:
        stack.stop()
        s3.stop()
        drop_pg_database(database)


@pytest.fixture(scope="session")
def ready_digits(prod_stack, cnn_pt2, digits_npz):
    """The digits CNN and its labelled test split, uploaded and inspected on the production stack."""
    from tests.stack import upload, wait_ready

    with prod_stack.client() as c:
        model = upload(c, "models", cnn_pt2).json()
        dataset = upload(c, "datasets", digits_npz).json()
        model, dataset = wait_ready(c, "models", model["id"]), wait_ready(c, "datasets", dataset["id"])
    assert model["status"] == "ready", model
    assert dataset["status"] == "ready", dataset
    return model, dataset
