"""Data sets: bundled digits, torchvision MNIST from the shared files, user arrays, binarization."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_vae import ConfigError, DataConfig, DataError, load_dataset
from pyro_vae.data import Dataset


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
    every = [torch.arange(static.train.shape[0])]
    epoch = lambda ds: next(ds.batches(every))  # noqa: E731
    assert torch.equal(epoch(static), epoch(static))
    assert set(static.train.unique().tolist()) <= {0.0, 1.0}
    torch.manual_seed(0)
    a, b = epoch(dynamic), epoch(dynamic)
    assert set(a.unique().tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    # the Bernoulli draws are unbiased: their mean matches the grey levels
    draws = torch.stack([epoch(dynamic) for _ in range(50)]).mean(0)
    assert torch.allclose(draws.mean(), none.train.mean(), atol=5e-3)


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


# --- bad input: one-line DataErrors naming the file or the field, never a torch/numpy traceback ---


def _one_line_data_error(call, match: str) -> DataError:
    with pytest.raises(DataError, match=match) as e:
        call()
    assert "\n" not in str(e.value)
    return e.value


def _load(path) -> Dataset:
    return load_dataset(DataConfig(str(path)))


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x_train": np.zeros((0, 4)), "x_test": np.zeros((3, 4))}, "'x_train' is empty"),
        ({"x_train": np.zeros((3, 4)), "x_test": np.zeros((0, 4))}, "'x_test' is empty"),
        ({"x": np.zeros((0, 2, 2))}, "'x' is empty"),
        ({"x": np.zeros((6, 0, 3))}, "dimension of size 0"),
        ({"x_train": np.zeros((3, 4, 0)), "x_test": np.zeros((3, 4, 0))}, "dimension of size 0"),
    ],
)
def test_empty_arrays_are_refused(tmp_path, arrays: dict, match: str) -> None:
    np.savez(tmp_path / "empty.npz", **arrays)
    err = _one_line_data_error(lambda: _load(tmp_path / "empty.npz"), match)
    assert "empty.npz" in str(err)


def test_an_empty_npy_is_refused(tmp_path) -> None:
    np.save(tmp_path / "empty.npy", np.zeros((0, 5), dtype=np.float32))
    _one_line_data_error(lambda: _load(tmp_path / "empty.npy"), "empty.npy: array 'x' is empty")


def _corrupt_copy(tmp_path, how: str):
    """A valid compressed .npz, then damaged in the middle of its first member's data."""
    path = tmp_path / f"{how}.npz"
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x=rng.random((200, 16)).astype(np.float32), y=rng.integers(0, 3, 200))
    data = bytearray(path.read_bytes())
    if how == "flipped":  # the stream still inflates, but the CRC does not match
        middle = len(data) // 3
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    elif how == "garbled":  # the deflate stream itself is broken (zlib.error)
        data[45:90] = bytes(b ^ 0xA5 for b in data[45:90])
    elif how == "truncated":
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["flipped", "garbled", "truncated"])
def test_a_corrupt_npz_is_a_data_error_naming_the_file(tmp_path, how: str) -> None:
    path = _corrupt_copy(tmp_path, how)
    err = _one_line_data_error(lambda: _load(path), "corrupt|cannot read")
    assert str(path) in str(err)


def test_npz_members_that_are_not_arrays(tmp_path) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random((20, 4)))
    for name, member in [("raw", b"not an array" * 10), ("cut", buf.getvalue()[:200])]:
        path = tmp_path / f"{name}.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", member)
        err = _one_line_data_error(lambda path=path: _load(path), "corrupt")
        assert str(path) in str(err)
    np.savez(tmp_path / "objects.npz", x=np.array([[1, "a"], [2, "b"]], dtype=object))
    _one_line_data_error(lambda: _load(tmp_path / "objects.npz"), "object array")


N = 20


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.zeros(N - 1, dtype=int), "19 labels for 20 data points"),
        (np.zeros(N + 1, dtype=int), "21 labels for 20 data points"),
        (np.array(["cat", "dog"] * (N // 2)), "dtype <U3.*np.unique"),
        (np.zeros((N, 2), dtype=int), r"shape \(20, 2\)"),
        (np.arange(N) % 3 + 0.5, "fractional"),
        (np.where(np.arange(N) == 4, np.nan, 1.0), "NaN"),
        (np.where(np.arange(N) == 4, np.inf, 1.0), "NaN or infinite"),
        (np.arange(N) % 3 - 2, "negative label -2"),
        (np.where(np.arange(N) == 0, 1e9, 0.0), "imply 1000000001 classes.*at most 10000"),
        (np.where(np.arange(N) == 0, 10**9, 0), "imply 1000000001 classes"),
        (np.where(np.arange(N) == 0, 1e30, 0.0), "classes"),
        (np.where(np.arange(N) == 0, 2**63 + 5, 0).astype(np.uint64), "classes"),
        (np.arange(N) % 2 == 0, "booleans"),
        (np.arange(N) * 2, r"more than 16.*training points \(16\)"),  # 39 classes, 16 to train on
    ],
)
def test_bad_labels_in_a_file(tmp_path, y: np.ndarray, match: str) -> None:
    x = np.random.default_rng(0).random((N, 4)).astype(np.float32)
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    err = _one_line_data_error(lambda: _load(tmp_path / "labelled.npz"), match)
    assert "labelled.npz" in str(err)


def test_bad_split_labels_in_a_file(tmp_path) -> None:
    x = np.random.default_rng(0).random((N, 4)).astype(np.float32)
    y = np.arange(N) % 3
    np.savez(tmp_path / "half.npz", x_train=x, x_test=x, y_train=y)
    _one_line_data_error(lambda: _load(tmp_path / "half.npz"), "only one of y_train and y_test")
    np.savez(tmp_path / "long.npz", x_train=x, x_test=x[:5], y_train=y, y_test=y)
    _one_line_data_error(lambda: _load(tmp_path / "long.npz"), "'y_test': 20 labels for 5 data")


def test_good_labels_in_a_file(tmp_path) -> None:
    x = np.random.default_rng(0).random((N, 4)).astype(np.float32)
    y = (np.arange(N) % 3).astype(np.float64)  # whole-number floats are fine
    np.savez(tmp_path / "col.npz", x=x, y=y.reshape(N, 1))  # (N, 1) is squeezed
    ds = _load(tmp_path / "col.npz")
    assert ds.train_labels.dtype == torch.int64 and ds.train_labels.shape == (16,)
    assert ds.num_classes == 3
    assert torch.equal(ds.check().train_labels, ds.train_labels)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.ones((N, 4), dtype=np.complex64), "real numeric array, got dtype complex64"),
        (np.full((N, 4), "a"), "real numeric array, got dtype <U1"),
        (np.zeros((N, 4), dtype="datetime64[s]"), "real numeric array"),
        (np.arange(N * 4).reshape(N, 4) - 3, r"range over \[-3, 76\]"),
        (np.arange(N * 4).reshape(N, 4) * 100, r"0\.\.255.*range over \[0, 7900\]"),
        (np.full((N, 4), 1e39), "float32's range"),
        (np.zeros(N), r"shape \(N, \.\.\.\)"),
    ],
)
def test_bad_x_arrays_in_a_file(tmp_path, x: np.ndarray, match: str) -> None:
    np.save(tmp_path / "x.npy", x)
    err = _one_line_data_error(lambda: _load(tmp_path / "x.npy"), match)
    assert "x.npy" in str(err)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8, np.uint16])
def test_integer_pixels_are_scaled_like_8_bit_images(tmp_path, dtype) -> None:
    x = (np.arange(N * 4).reshape(N, 4) * 3).astype(dtype)  # 0..237
    np.savez(tmp_path / "ints.npz", x_train=x, x_test=x[:4])
    ds = _load(tmp_path / "ints.npz")
    assert ds.train.dtype == torch.float32
    assert torch.allclose(ds.train, torch.as_tensor(x.astype(np.float32) / 255))


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int64, np.uint8])
def test_binary_integer_data_stay_binary(tmp_path, dtype) -> None:
    x = (np.arange(N * 4).reshape(N, 4) % 2).astype(dtype)
    np.savez(tmp_path / "bits.npz", x_train=x, x_test=x[:4])
    ds = _load(tmp_path / "bits.npz")
    assert set(ds.train.unique().tolist()) == {0.0, 1.0}  # not 1/255


def test_train_and_test_integers_are_scaled_together(tmp_path) -> None:
    np.savez(
        tmp_path / "mixed.npz",
        x_train=np.full((4, 2), 255, dtype=np.uint8),
        x_test=np.ones((4, 2), dtype=np.uint8),  # alone it would look binary
    )
    ds = _load(tmp_path / "mixed.npz")
    assert float(ds.train.max()) == 1.0 and float(ds.test.max()) == pytest.approx(1 / 255)


# --- a Dataset built in Python: Dataset.check, run by train(dataset=...) ---


def _python_dataset(**fields) -> Dataset:
    g = torch.Generator().manual_seed(0)
    base = {
        "name": "tiny",
        "train": torch.rand(24, 1, 4, 4, generator=g).round(),
        "test": torch.rand(8, 1, 4, 4, generator=g).round(),
        "train_labels": torch.arange(24) % 3,
        "test_labels": torch.arange(8) % 3,
        "num_classes": 3,
    }
    base.update(fields)
    return Dataset(**base)


def _tiny_run():
    from pyro_vae import ModelConfig, RunConfig, TrainConfig

    return RunConfig(
        model=ModelConfig(latent_dim=2, hidden=(8,)),
        train=TrainConfig(epochs=1, batch_size=32, device="cpu"),
    )


def test_a_good_python_dataset_passes_and_trains() -> None:
    from pyro_vae import train

    ds = _python_dataset()
    assert ds.check() is ds
    assert len(train(_tiny_run(), progress=False, dataset=ds).history) == 1


_X = torch.rand(24, 1, 4, 4)
_NAN = _X.clone()
_NAN[3, 0, 1, 1] = float("nan")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"train": _X.double()}, "Dataset.train has dtype torch.float64.*x.float()"),
        ({"test": torch.ones(8, 1, 4, 4, dtype=torch.uint8)}, r"torch.uint8.*x.float\(\) / 255"),
        ({"train": (_X * 255).long()}, "dtype torch.int64"),
        ({"train": _X > 0.5}, "dtype torch.bool"),
        ({"train": _X.to(torch.complex64)}, "dtype torch.complex64"),
        ({"train": _X.numpy()}, "is a ndarray, not a torch.Tensor"),
        ({"train": _NAN}, "Dataset.train contains NaN"),
        ({"test": torch.full((8, 1, 4, 4), float("inf"))}, "Dataset.test contains NaN or inf"),
        ({"train": _X.flatten()[:24], "test": _X.flatten()[:8]}, r"shape \(24,\); expected"),
        ({"train": _X[:0], "train_labels": torch.zeros(0, dtype=torch.long)}, "is empty"),
        ({"train": torch.zeros(24, 0), "test": torch.zeros(8, 0)}, "dimension of size 0"),
        ({"test": torch.rand(8, 16)}, "differ in shape"),
        ({"train_labels": torch.arange(23) % 3}, "23 labels for 24 data points"),
        ({"test_labels": torch.arange(9) % 3}, "9 labels for 8 data points"),
        ({"train_labels": (torch.arange(24) % 3).float()}, "dtype torch.float32.*y.long()"),
        ({"train_labels": torch.arange(24) % 2 == 0}, "dtype torch.bool"),
        ({"train_labels": (torch.arange(24) % 3).int()}, "dtype torch.int32"),
        ({"train_labels": (torch.arange(24) % 3)[:, None]}, r"\(24, 1\).*squeeze"),
        ({"train_labels": torch.zeros(24, 2, dtype=torch.long)}, r"shape \(24, 2\)"),
        ({"train_labels": torch.arange(24) % 3 - 2}, "negative label -2"),
        ({"test_labels": torch.full((8,), 10**9)}, "labels reach 1000000000, but num_classes is 3"),
        (
            {"test_labels": torch.full((8,), 10**9), "num_classes": 10**9 + 1},
            "imply 1000000001 classes.*at most 10000",
        ),
        ({"num_classes": 30}, r"more than 24.*training points \(24\)"),
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": None}, "has labels but num_classes is None"),
        ({"test_labels": None}, "only one of train_labels and test_labels"),
        ({"binarize": "dynamic", "train": _X * 2}, r"must lie in \[0, 1\]"),
        ({"binarize": "sometimes"}, "binarize must be none, dynamic or static"),
    ],
)
def test_bad_python_datasets_are_refused_by_train(fields: dict, match: str) -> None:
    from pyro_vae import train

    ds = _python_dataset(**fields)
    err = _one_line_data_error(lambda: train(_tiny_run(), progress=False, dataset=ds), match)
    assert "'tiny'" in str(err)
    _one_line_data_error(ds.check, match)


def test_load_dataset_checks_what_a_registered_source_returns(monkeypatch) -> None:
    from pyro_vae.data import DATASETS, DatasetSource

    bad = DatasetSource(lambda c: _python_dataset(train=_X.double()))
    monkeypatch.setitem(DATASETS._factories, "bad-source", bad)
    _one_line_data_error(lambda: load_dataset(DataConfig("bad-source")), "float64")


def test_the_digits_are_read_as_scikit_learn_reads_them() -> None:
    # read from scikit-learn's bundled file without importing scikit-learn (seconds of import)
    from sklearn.datasets import load_digits

    from pyro_vae.data import digits_arrays

    pixels, labels = digits_arrays()
    d = load_digits()
    assert np.array_equal(pixels, d.data) and np.array_equal(labels, d.target)
    assert pixels.dtype == d.data.dtype
