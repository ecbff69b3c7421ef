"""Data sets as single tensors on the training device.

Batches are index slices of one tensor, never collated item by item: on a GPU the whole of MNIST is
188 MB, and indexing it costs a fraction of a training step.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import DataConfig
from .errors import ConfigError, DataError
from .registry import Registry

_TEST_BINARIZATION_SEED = 1  # fixed, so every run is scored on the same binary test set
_STATIC_BINARIZATION_SEED = 0
_SPLIT_SEED = 0


def default_data_dir() -> Path:
    """``$PYRO_VAE_DATA`` if set, else ``~/.cache/pyro-vae``."""
    env = os.environ.get("PYRO_VAE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyro-vae"


@dataclass
class Dataset:
    """Train and test tensors of shape ``(N, *x_shape)``, optional integer labels."""

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None
    binarize: str = "none"

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def device(self) -> torch.device:
        return self.train.device

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Dataset:
        def move(t: torch.Tensor | None, is_x: bool) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if is_x and dtype else None)

        return replace(
            self,
            train=move(self.train, True),
            test=move(self.test, True),
            train_labels=move(self.train_labels, False),
            test_labels=move(self.test_labels, False),
        )

    def epoch_train(self) -> torch.Tensor:
        """The training set for one epoch: a fresh Bernoulli draw under dynamic binarization."""
        if self.binarize == "dynamic":
            return torch.bernoulli(self.train)
        return self.train


def batches(
    n: int, batch_size: int, device: torch.device, shuffle: bool = True
) -> Iterator[torch.Tensor]:
    """Index tensors covering ``range(n)`` in batches, shuffled with the device's global RNG."""
    order = torch.randperm(n, device=device) if shuffle else torch.arange(n, device=device)
    yield from order.split(batch_size)


@dataclass(frozen=True)
class DatasetSource:
    """A registered data set: ``load(config)`` returns it on the CPU, pixels scaled to [0, 1].

    ``options`` names the :class:`~pyro_vae.config.DataConfig` fields it reads besides ``dataset``
    and ``binarize`` (every data set is binarized the same way); the others are refused for it.
    """

    load: Callable[[DataConfig], Dataset]
    options: frozenset[str] = frozenset()
    description: str = ""

    def __call__(self, config: DataConfig) -> Dataset:
        return self.load(config)


#: name -> :class:`DatasetSource`; a path ending in .npz or .npy is read by :data:`ARRAY_FILE`
DATASETS: Registry[DatasetSource] = Registry("data set", base=DatasetSource)


def _data_dir(config: DataConfig) -> Path:
    return Path(config.data_dir).expanduser() if config.data_dir else default_data_dir()


DATASETS.register("digits")(
    DatasetSource(
        lambda c: _digits(c.test_fraction),
        frozenset({"test_fraction"}),
        "scikit-learn's bundled 8x8 digits (1797 images, 10 classes)",
    )
)
DATASETS.register("mnist")(
    DatasetSource(
        lambda c: _torchvision("mnist", _data_dir(c)),
        frozenset({"data_dir"}),
        "MNIST through torchvision, from --data-dir",
    )
)
DATASETS.register("fashion-mnist")(
    DatasetSource(
        lambda c: _torchvision("fashion-mnist", _data_dir(c)),
        frozenset({"data_dir"}),
        "Fashion-MNIST through torchvision, from --data-dir",
    )
)
#: a .npz (x, y or x_train, x_test, y_train, y_test) or .npy (x) file named by its path
ARRAY_FILE = DatasetSource(
    lambda c: _array_file(
        Path(c.dataset).expanduser(), c.test_fraction, c.test_fraction != DataConfig().test_fraction
    ),
    frozenset({"test_fraction"}),
    "a .npz or .npy file",
)


def dataset_source(name: str) -> DatasetSource:
    """The registered data set ``name``, or the array-file reader for a .npz/.npy path."""
    if isinstance(name, str) and name not in DATASETS and name.endswith((".npz", ".npy")):
        return ARRAY_FILE
    if isinstance(name, str) and name.startswith("custom:"):
        raise ConfigError(
            f"this run was trained on a data set passed in Python ({name[7:]}); reload it with "
            "pyro_vae.load_run(RUN, dataset=...)"
        )
    try:
        return DATASETS.get(name)
    except ConfigError:
        raise ConfigError(
            f"unknown data set {name!r}: choose one of {', '.join(DATASETS.names())}, give the "
            "path of a .npz or .npy file, or --import the module that registers it"
        ) from None


def check_data_options(config: DataConfig) -> None:
    """Refuse data options the chosen data set does not read (e.g. --data-dir for digits)."""
    source = dataset_source(config.dataset)
    defaults = DataConfig()
    for name in ("data_dir", "test_fraction"):
        if getattr(config, name) != getattr(defaults, name) and name not in source.options:
            takers = [n for n in DATASETS if name in DATASETS.get(n).options]
            if name in ARRAY_FILE.options:
                takers.append(".npz/.npy files")
            raise ConfigError(
                f"--{name.replace('_', '-')} is not used by --dataset {config.dataset}; it is read "
                f"by {', '.join(takers)}"
            )


def load_dataset(config: DataConfig) -> Dataset:
    """Load ``config.dataset`` on the CPU, scaled to [0, 1] where it is image data, and binarize it."""
    return binarize(dataset_source(config.dataset)(config), config.binarize)


def fingerprint(ds: Dataset) -> str:
    """A hash of the data's values and labels: ``--resume`` and ``load_run`` check that they are the
    data the run was trained on."""
    h = hashlib.blake2b(digest_size=16)
    for t in (ds.train, ds.test, ds.train_labels, ds.test_labels):
        if t is None:
            h.update(b"none")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def binarize(ds: Dataset, mode: str) -> Dataset:
    if mode == "none":
        return ds
    if mode not in ("dynamic", "static"):
        raise ConfigError(f"unknown binarization {mode!r}: choose one of none, dynamic, static")
    for split in (ds.train, ds.test):
        lo, hi = float(split.min()), float(split.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"binarization draws pixels as Bernoulli(x), so x must lie in [0, 1]; "
                f"the data range over [{lo:g}, {hi:g}]"
            )
    g = torch.Generator().manual_seed(_TEST_BINARIZATION_SEED)
    test = torch.bernoulli(ds.test, generator=g)
    train = ds.train
    if mode == "static":
        train = torch.bernoulli(
            ds.train, generator=torch.Generator().manual_seed(_STATIC_BINARIZATION_SEED)
        )
    return replace(ds, train=train, test=test, binarize=mode)


def _split(x: torch.Tensor, y: torch.Tensor | None, test_fraction: float) -> tuple:
    n = x.shape[0]
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise DataError(f"{n} data points are too few to split into train and test sets")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    tr, te = perm[n_test:], perm[:n_test]
    return x[tr], x[te], (y[tr] if y is not None else None), (y[te] if y is not None else None)


def _digits(test_fraction: float) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.long)
    xtr, xte, ytr, yte = _split(x, y, test_fraction)
    return Dataset("digits", xtr, xte, ytr, yte, num_classes=10)


def _torchvision(name: str, data_dir: Path) -> Dataset:
    from torchvision import datasets

    cls = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the data directory {data_dir}: {e}; pass a writable --data-dir"
        ) from None
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # offline machines should fail in seconds, not hang
    try:
        splits = [cls(str(data_dir), train=train, download=True) for train in (True, False)]
    except (
        Exception
    ) as e:  # torchvision raises RuntimeError, URLError, OSError... for the same cause
        raise DataError(
            f"could not load {name} from {data_dir} ({type(e).__name__}: {e}). Offline? Put the four "
            f"original .gz files in {data_dir / cls.__name__ / 'raw'}, or point --data-dir "
            "(or $PYRO_VAE_DATA) at a directory that has them"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    tr, te = splits
    to_x = lambda d: d.data.unsqueeze(1).float().div_(255.0)  # noqa: E731
    return Dataset(name, to_x(tr), to_x(te), tr.targets.long(), te.targets.long(), num_classes=10)


def _as_images(a: np.ndarray, path: Path) -> torch.Tensor:
    if a.ndim < 2:
        raise DataError(
            f"{path}: expected an array of shape (N, ...) with one datum per row, got {a.shape}"
        )
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{path}: expected a real numeric array, got dtype {a.dtype}")
    x = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    if not torch.isfinite(x).all():
        raise DataError(
            f"{path}: the data contain NaN or infinite values; clean or impute them first"
        )
    return x


def _array_file(path: Path, test_fraction: float, fraction_given: bool = False) -> Dataset:
    if not path.exists():
        raise DataError(f"no such data file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"cannot read {path} as a NumPy array file: {e}") from None
    y_tr = y_te = None
    if isinstance(loaded, np.ndarray):
        x, y = _as_images(loaded, path), None
        xtr, xte, ytr, yte = _split(x, y, test_fraction)
        return Dataset(str(path), xtr, xte)
    keys = set(loaded.files)
    if {"x_train", "x_test"} <= keys:
        if fraction_given:
            raise ConfigError(
                f"--test-fraction is not used: {path} has its own test split (x_test); drop it"
            )
        xtr, xte = _as_images(loaded["x_train"], path), _as_images(loaded["x_test"], path)
        if {"y_train", "y_test"} <= keys:
            y_tr = torch.as_tensor(loaded["y_train"]).long()
            y_te = torch.as_tensor(loaded["y_test"]).long()
    elif "x" in keys:
        x = _as_images(loaded["x"], path)
        y = torch.as_tensor(loaded["y"]).long() if "y" in keys else None
        xtr, xte, y_tr, y_te = _split(x, y, test_fraction)
    else:
        raise DataError(
            f"{path} has arrays {sorted(keys)}; expected 'x' (and optionally 'y'), "
            "or 'x_train' and 'x_test' (and optionally 'y_train', 'y_test')"
        )
    if xtr.shape[1:] != xte.shape[1:]:
        raise DataError(
            f"{path}: train and test data differ in shape: {tuple(xtr.shape)} vs {tuple(xte.shape)}"
        )
    num_classes = None
    if y_tr is not None:
        if y_tr.shape[0] != xtr.shape[0] or y_te.shape[0] != xte.shape[0]:
            raise DataError(
                f"{path}: the number of labels does not match the number of data points"
            )
        num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(str(path), xtr, xte, y_tr, y_te, num_classes)
