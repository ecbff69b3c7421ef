from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    for candidate in (os.environ.get("PYRO_VAE_TEST_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the shared MNIST/Fashion-MNIST raw files (torchvision extracts beside them)."""
    src = _shared_data()
    if src is None:
        pytest.skip(
            "the shared MNIST files are not here; set PYRO_VAE_TEST_DATA to their directory"
        )
    dst = tmp_path_factory.mktemp("data")
    for name in ("MNIST", "FashionMNIST"):
        if (src / name).is_dir():
            shutil.copytree(src / name, dst / name)
    return dst


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def tiny_config(**train: object) -> RunConfig:
    """A configuration that trains on the bundled digits in well under a second an epoch."""
    t = {"epochs": 2, "batch_size": 256, "seed": 0, "device": "cpu"}
    t.update(train)
    return RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(latent_dim=2, hidden=(32,)),
        train=TrainConfig(**t),
    )
