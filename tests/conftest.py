"""Shared fixtures: small datasets and a tiny trained model, made once per test session."""

import numpy as np
import pytest
import torch

from trc_lib.interfaces import workflow
from trc_lib.data import read_dataset

torch.set_num_threads(1)  # tests are many tiny problems; threads only add overhead


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Train (400 samples, seed 42) and test (100 samples, seed 123) sets of the default problem."""
    root = tmp_path_factory.mktemp("data")
    workflow.generate(root / "lqr_train", num_samples=400, seed=42, log=lambda *_: None)
    workflow.generate(root / "lqr_test", num_samples=100, seed=123, log=lambda *_: None)
    return root


@pytest.fixture(scope="session")
def train_path(data_dir):
    return data_dir / "lqr_train" / "lqr_dataset.npz"


@pytest.fixture(scope="session")
def test_path(data_dir):
    return data_dir / "lqr_test" / "lqr_dataset.npz"


@pytest.fixture(scope="session")
def test_set(test_path):
    return read_dataset(test_path)


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory, train_path):
    """A tiny model trained for 3 epochs: enough to exercise every file the trainer writes."""
    out = tmp_path_factory.mktemp("trained")
    workflow.train_model(train_path, output_dir=out, model_size="small", epochs=3, batch_size=64, latent_dim=32, progress=False,
                         log=lambda *_: None)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
