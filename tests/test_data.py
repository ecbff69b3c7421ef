"""Data sets: bundled digits, torchvision MNIST from the shared files, user arrays, binarization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_vae import ConfigError, DataConfig, DataError, load_dataset
from pyro_vae.data import batches


def test_digits_is_the_default() -> None:
    ds = load_dataset(DataConfig())
    assert ds.name == "digits" and ds.x_shape == (1, 8, 8)
    assert ds.train.shape[0] + ds.test.shape[0] == 1797
    assert 0.0 <= float(ds.train.min()) and float(ds.train.max()) <= 1.0
    assert ds.num_classes == 10 and set(ds.test_labels.tolist()) == set(range(10))
    # the split is fixed, whatever the run's seed
    torch.manual_seed(123)
    assert torch.equal(load_dataset(DataConfig()).test, ds.test)


def test_binarization_modes() -> None:
    none = load_dataset(DataConfig(binarize="none"))
    static = load_dataset(DataConfig(binarize="static"))
    dynamic = load_dataset(DataConfig(binarize="dynamic"))
    for ds in (static, dynamic):
        assert set(ds.test.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(static.test, dynamic.test)  # one fixed binary test set for both
    assert torch.equal(static.epoch_train(), static.epoch_train())
    assert set(static.train.unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(0)
    a, b = dynamic.epoch_train(), dynamic.epoch_train()
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    # the Bernoulli draws are unbiased: their mean matches the grey levels
    draws = torch.stack([dynamic.epoch_train() for _ in range(50)]).mean(0)
    assert torch.allclose(draws.mean(), none.train.mean(), atol=5e-3)


def test_batches_cover_every_index_once() -> None:
    idx = torch.cat(list(batches(103, 10, torch.device("cpu"))))
    assert sorted(idx.tolist()) == list(range(103))


def test_unknown_dataset_and_binarization() -> None:
    with pytest.raises(ConfigError, match="unknown data set 'cifar'"):
        load_dataset(DataConfig("cifar"))
    with pytest.raises(ConfigError, match="unknown binarization"):
        load_dataset(DataConfig(binarize="sometimes"))


def test_user_arrays(tmp_path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "flat.npy", rng.random((50, 16)).astype(np.float32))
    ds = load_dataset(DataConfig(str(tmp_path / "flat.npy")))
    assert ds.x_shape == (16,) and ds.train.shape[0] + ds.test.shape[0] == 50

    np.savez(
        tmp_path / "imgs.npz",
        x=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8),
        y=rng.integers(0, 3, 40),
    )
    ds = load_dataset(DataConfig(str(tmp_path / "imgs.npz")))
    assert ds.x_shape == (1, 6, 6) and float(ds.train.max()) <= 1.0  # uint8 scaled by 1/255
    assert ds.num_classes is not None and ds.train_labels.shape[0] == ds.train.shape[0]

    np.savez(tmp_path / "split.npz", x_train=rng.random((30, 4)), x_test=rng.random((10, 4)))
    ds = load_dataset(DataConfig(str(tmp_path / "split.npz")))
    assert ds.train.shape == (30, 4) and ds.test.shape == (10, 4)


def test_bad_user_arrays(tmp_path) -> None:
    with pytest.raises(DataError, match="no such data file"):
        load_dataset(DataConfig(str(tmp_path / "missing.npz")))
    bad = np.zeros((10, 4))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(DataConfig(str(tmp_path / "nan.npy")))
    np.save(tmp_path / "vector.npy", np.zeros(10))
    with pytest.raises(DataError, match=r"shape \(N, \.\.\.\)"):
        load_dataset(DataConfig(str(tmp_path / "vector.npy")))
    np.savez(tmp_path / "keys.npz", images=np.zeros((4, 2)))
    with pytest.raises(DataError, match="expected 'x'"):
        load_dataset(DataConfig(str(tmp_path / "keys.npz")))
    np.savez(tmp_path / "mismatch.npz", x_train=np.zeros((4, 2)), x_test=np.zeros((4, 3)))
    with pytest.raises(DataError, match="differ in shape"):
        load_dataset(DataConfig(str(tmp_path / "mismatch.npz")))
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(DataConfig(str(tmp_path / "junk.npy")))
    np.save(tmp_path / "big.npy", np.full((10, 4), 3.0))
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        load_dataset(DataConfig(str(tmp_path / "big.npy"), binarize="static"))


def test_mnist_from_the_shared_files(data_dir) -> None:
    ds = load_dataset(DataConfig("mnist", data_dir=str(data_dir)))
    assert ds.train.shape == (60000, 1, 28, 28) and ds.test.shape == (10000, 1, 28, 28)
    assert (
        ds.train.dtype == torch.float32
        and 0 <= float(ds.train.min())
        and float(ds.train.max()) == 1.0
    )
    assert ds.num_classes == 10 and ds.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_fashion_mnist_from_the_shared_files(data_dir) -> None:
    ds = load_dataset(DataConfig("fashion-mnist", data_dir=str(data_dir)))
    assert ds.train.shape == (60000, 1, 28, 28) and ds.test.shape == (10000, 1, 28, 28)


def test_absent_and_offline_mnist_is_a_clear_error(tmp_path, monkeypatch) -> None:
    import urllib.error

    from torchvision.datasets import MNIST

    def offline(self) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(DataError, match=r"could not load mnist.*Offline\?.*MNIST/raw"):
        load_dataset(DataConfig("mnist", data_dir=str(tmp_path / "empty")))
