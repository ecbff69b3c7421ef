"""Data sets as single tensors on the training device.

Batches are index slices of one tensor, never collated item by item: on a GPU the whole of MNIST is
188 MB, and indexing it costs a fraction of a training step.
"""

from __future__ import annotations

import hashlib
import numbers
import os
import socket
from collections.abc import Callable, Iterator, Sequence
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

#: the most classes a labelled data set may have: labels are class indices 0..K-1, and K is also at
#: most the number of training points (huge labels would make M2 and the CVAE build K-wide layers)
MAX_CLASSES = 10_000


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

    def check(self) -> Dataset:
        """Raise a one-line :class:`DataError` unless these tensors are data pyro-vae can train on.

        The rules, for a data set built in Python as for one read from a file:

        * ``train`` and ``test`` are float32 tensors of shape ``(N, *x_shape)``, ``N >= 1``, with
          the same ``x_shape`` (at least one dimension, none of size 0) and finite values;
        * labels are both given or both ``None``; each is a 1-D int64 tensor with one class index
          per row, at least 0 and below ``num_classes``;
        * ``num_classes`` (required with labels) is an integer from 1 to at most
          ``min(MAX_CLASSES, number of training points)``;
        * ``binarize`` is ``"none"``, ``"dynamic"`` or ``"static"``; data in [0, 1] unless none.

        Returns the data set itself, so that it chains.
        """
        if not isinstance(self.name, str):
            raise DataError(f"Dataset.name must be a string, got {self.name!r}")
        where = f"data set {self.name!r}"
        for split in ("train", "test"):
            _check_x(getattr(self, split), f"{where}: Dataset.{split}")
        if self.train.shape[1:] != self.test.shape[1:]:
            raise DataError(
                f"{where}: train and test data differ in shape: {tuple(self.train.shape)} vs "
                f"{tuple(self.test.shape)}; every datum must have the same shape"
            )
        if self.binarize not in ("none", "dynamic", "static"):
            raise DataError(
                f"{where}: Dataset.binarize must be none, dynamic or static, got {self.binarize!r}"
            )
        if self.binarize != "none":
            for split in ("train", "test"):
                x = getattr(self, split)
                lo, hi = float(x.min()), float(x.max())
                if lo < 0 or hi > 1:
                    raise DataError(
                        f"{where}: binarize={self.binarize!r} draws pixels as Bernoulli(x), so x "
                        f"must lie in [0, 1], but Dataset.{split} ranges over [{lo:g}, {hi:g}]"
                    )
        labels = (self.train_labels, self.test_labels)
        if (labels[0] is None) != (labels[1] is None):
            raise DataError(
                f"{where}: only one of train_labels and test_labels is given; give both or neither"
            )
        top = None
        if labels[0] is not None:
            for split, y, x in (("train", labels[0], self.train), ("test", labels[1], self.test)):
                _check_labels(y, x.shape[0], f"{where}: Dataset.{split}_labels")
            top = int(max(labels[0].max(), labels[1].max()))
            if self.num_classes is None:
                raise DataError(
                    f"{where} has labels but num_classes is None; pass num_classes=K with the "
                    f"labels in 0..K-1 (here K is at least {top + 1})"
                )
        k = self.num_classes
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
                raise DataError(f"{where}: num_classes must be a positive integer, got {k!r}")
            if top is not None and top >= k:
                raise DataError(
                    f"{where}: the labels reach {top}, but num_classes is {k} (labels are class "
                    f"indices 0..{k - 1}); pass num_classes={top + 1} or relabel the data"
                )
            _check_class_count(int(k), self.train.shape[0], where)
        return self

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Training rows ``idx`` on the training device, as stored (never binarized afresh)."""
        return self.train[idx]

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The training rows of each index batch in turn, on the training device; under dynamic
        binarization each batch is a fresh Bernoulli draw (with the device's global RNG, in batch
        order, so every way of reading the rows gives the same draws)."""
        for idx in index_batches:
            x = self.rows(idx)
            yield torch.bernoulli(x) if self.binarize == "dynamic" else x


def check_rows(shape: tuple[int, ...], where: str) -> None:
    """Data are (N, ...) with N >= 1 rows, each holding at least one value."""
    if len(shape) < 2:
        raise DataError(
            f"{where} has shape {tuple(shape)}; expected an array of shape (N, ...) with one datum "
            "per row "
            "(a data set of scalars is (N, 1))"
        )
    if shape[0] == 0:
        raise DataError(f"{where} is empty (shape {tuple(shape)}); it needs at least one datum")
    if 0 in shape[1:]:
        raise DataError(
            f"{where} has a dimension of size 0 (shape {tuple(shape)}); every datum needs at "
            "least one value"
        )


def _check_x(x: object, where: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{where} is a {type(x).__name__}, not a torch.Tensor; pass "
            "torch.as_tensor(x, dtype=torch.float32)"
        )
    if x.dtype != torch.float32:
        if x.dtype == torch.uint8:
            hint = "scale 8-bit pixels to [0, 1] with x.float() / 255"
        elif x.dtype.is_complex:
            hint = "pass real data (e.g. x.real, or the magnitudes x.abs()) as float32"
        else:
            hint = "convert it with x.float() (scaled as the likelihood needs)"
        raise DataError(f"{where} has dtype {x.dtype}, but pyro-vae trains on float32 data; {hint}")
    check_rows(tuple(x.shape), where)
    if not torch.isfinite(x).all():
        raise DataError(f"{where} contains NaN or infinite values; clean or impute them first")


def _check_labels(y: object, n: int, where: str) -> None:
    if not isinstance(y, torch.Tensor):
        raise DataError(
            f"{where} is a {type(y).__name__}, not a torch.Tensor; pass "
            "torch.as_tensor(y, dtype=torch.long)"
        )
    if y.dtype != torch.int64:
        raise DataError(
            f"{where} have dtype {y.dtype}; labels are integer class indices 0..K-1 of dtype "
            "torch.long: convert them with y.long() (booleans and whole-number floats), or map "
            "other values to 0..K-1 first"
        )
    if y.dim() != 1:
        hint = "; squeeze them: y.squeeze(1)" if y.dim() == 2 and y.shape[1] == 1 else ""
        raise DataError(
            f"{where} have shape {tuple(y.shape)}; expected one class label per datum, shape "
            f"({n},){hint}"
        )
    if y.shape[0] != n:
        raise DataError(
            f"{where}: {y.shape[0]} labels for {n} data points; give exactly one label per datum"
        )
    if y.numel() and int(y.min()) < 0:
        raise DataError(
            f"{where} include the negative label {int(y.min())}; labels are class indices 0..K-1: "
            "relabel them (e.g. np.unique(y, return_inverse=True))"
        )


def _check_class_count(k: int, n_train: int | None, where: str) -> None:
    """Refuse ``k`` classes beyond ``min(MAX_CLASSES, n_train)`` (``n_train`` None: unknown)."""
    limit = MAX_CLASSES if n_train is None else min(MAX_CLASSES, n_train)
    if k > limit:
        points = "" if n_train is None else f" ({n_train})"
        raise DataError(
            f"{where}: the labels imply {k} classes (labels 0..{k - 1}), more than {limit}: a data "
            f"set may have at most {MAX_CLASSES} classes and no more than its number of training "
            f"points{points}; relabel the classes as 0..K-1 (e.g. np.unique(y, "
            "return_inverse=True))"
        )


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
    """Load ``config.dataset`` on the CPU, scaled to [0, 1] where it is image data, and binarize it.

    The data are checked by :meth:`Dataset.check` (a registered source may return anything)."""
    ds = dataset_source(config.dataset)(config)
    if not isinstance(ds, Dataset):
        raise DataError(
            f"the data set {config.dataset!r} loaded a {type(ds).__name__}, not a "
            "pyro_vae.data.Dataset; its loader must return one"
        )
    return binarize(ds.check(), config.binarize)


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


def _read(loaded: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """Member ``key`` of an open .npz: np.load reads lazily, so a corrupt member fails here."""
    try:
        a = loaded[key]
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(
                f"{path}: array {key!r} holds Python objects (an object array); save numeric "
                "arrays only (e.g. np.asarray(x, dtype=np.float32))"
            ) from None
        raise _corrupt(path, key, e) from None
    except Exception as e:  # BadZipFile, zlib.error, OSError, EOFError, ... for the same cause
        raise _corrupt(path, key, e) from None
    if not isinstance(a, np.ndarray):  # a member without the .npy header comes back as raw bytes
        raise DataError(
            f"{path}: member {key!r} is not a NumPy array (no .npy header); the file is corrupt or "
            "was not written by np.savez: write it again with np.savez"
        )
    return a


def _corrupt(path: Path, key: str, e: Exception) -> DataError:
    return DataError(
        f"cannot read array {key!r} from {path} ({type(e).__name__}: {e}); the file is corrupt or "
        "truncated: write or download it again"
    )


def _as_images(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """The data arrays of one file as float32 tensors ``(N, *x_shape)``; ``(N, H, W)`` gets a channel.

    Floats are kept as they are. Integer (and boolean) arrays are read jointly (train and test
    alike): all in {0, 1}, as binary data; otherwise in 0..255, as 8-bit pixels divided by 255; anything
    else is refused, since no scale can be guessed for it.
    """
    for key, a in arrays.items():
        where = f"{path}: array {key!r}"
        check_rows(a.shape, where)
        kind = a.dtype.kind
        if kind not in "biuf":  # complex, strings, objects, dates, records
            raise DataError(
                f"{where}: expected a real numeric array, got dtype {a.dtype}; save float or 8-bit "
                "integer pixel values"
            )
    ints = [a for a in arrays.values() if a.dtype.kind in "biu"]
    scale = 1.0
    if ints:
        lo = min(int(a.min()) for a in ints)
        hi = max(int(a.max()) for a in ints)
        if lo < 0 or hi > 255:
            raise DataError(
                f"{path}: integer data are read as binary 0/1 or as 8-bit pixels 0..255 (divided "
                f"by 255), but these range over [{lo}, {hi}]; save them as floats scaled as the "
                "model needs"
            )
        scale = 1.0 if hi <= 1 else 255.0
    out = {}
    for key, a in arrays.items():
        if a.dtype.kind in "biu":
            x = torch.as_tensor(a.astype(np.float32) / np.float32(scale))
        else:
            x = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
        if x.ndim == 3:  # (N, H, W): one channel
            x = x.unsqueeze(1)
        if not torch.isfinite(x).all():
            raise DataError(
                f"{path}: array {key!r} contains NaN or infinite values (or values beyond "
                "float32's range); clean or impute them first"
            )
        out[key] = x
    return out


def _as_labels(a: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    """Class labels as a 1-D int64 tensor: whole numbers from 0, one per datum; (N, 1) squeezed."""
    where = f"{path}: labels {key!r}"
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise DataError(
            f"{where} have shape {a.shape}; expected one class label per datum, shape ({n},)"
        )
    if a.shape[0] != n:
        raise DataError(
            f"{where}: {a.shape[0]} labels for {n} data points; give exactly one label per datum"
        )
    if a.dtype.kind == "b":
        raise DataError(
            f"{where} are booleans; save class labels as integers 0..K-1 (y.astype(np.int64))"
        )
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise DataError(f"{where} contain NaN or infinite values; every datum needs a class")
        if (a != np.round(a)).any():
            raise DataError(
                f"{where} include fractional values such as {a[a != np.round(a)][0].item()!r}; "
                "labels are integer class indices 0..K-1"
            )
    elif a.dtype.kind not in "iu":
        raise DataError(
            f"{where} have dtype {a.dtype}; labels are integer class indices 0..K-1: map names "
            "to integers first (e.g. np.unique(y, return_inverse=True))"
        )
    if a.min() < 0:
        raise DataError(
            f"{where} include the negative label {a.min().item()!r}; labels are class indices "
            "0..K-1: relabel them (e.g. np.unique(y, return_inverse=True))"
        )
    if a.max() >= MAX_CLASSES:  # before the cast: 1e30 or uint64 values would wrap around
        _check_class_count(int(min(a.max(), 2**62)) + 1, None, str(path))
    return torch.as_tensor(a.astype(np.int64))


def _array_file(path: Path, test_fraction: float, fraction_given: bool = False) -> Dataset:
    if not path.exists():
        raise DataError(f"no such data file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(
                f"{path} holds Python objects (an object array); save numeric arrays only "
                "(e.g. np.asarray(x, dtype=np.float32))"
            ) from None
        raise DataError(f"cannot read {path} as a NumPy array file: {e}") from None
    except Exception as e:
        raise DataError(f"cannot read {path} as a NumPy array file: {e}") from None
    if isinstance(loaded, np.ndarray):
        x = _as_images({"x": loaded}, path)["x"]
        xtr, xte, _, _ = _split(x, None, test_fraction)
        return Dataset(str(path), xtr, xte)
    with loaded:
        return _npz(loaded, path, test_fraction, fraction_given)


def _npz(
    loaded: np.lib.npyio.NpzFile, path: Path, test_fraction: float, fraction_given: bool
) -> Dataset:
    keys = set(loaded.files)
    y_tr = y_te = None
    if {"x_train", "x_test"} <= keys:
        if fraction_given:
            raise ConfigError(
                f"--test-fraction is not used: {path} has its own test split (x_test); drop it"
            )
        x = _as_images({k: _read(loaded, k, path) for k in ("x_train", "x_test")}, path)
        xtr, xte = x["x_train"], x["x_test"]
        if ("y_train" in keys) != ("y_test" in keys):
            raise DataError(
                f"{path} has only one of y_train and y_test; give labels for both splits or neither"
            )
        if "y_train" in keys:
            y_tr = _as_labels(_read(loaded, "y_train", path), xtr.shape[0], path, "y_train")
            y_te = _as_labels(_read(loaded, "y_test", path), xte.shape[0], path, "y_test")
    elif "x" in keys:
        x = _as_images({"x": _read(loaded, "x", path)}, path)["x"]
        y = _as_labels(_read(loaded, "y", path), x.shape[0], path, "y") if "y" in keys else None
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
        num_classes = int(max(y_tr.max(), y_te.max())) + 1
        _check_class_count(num_classes, xtr.shape[0], str(path))
    return Dataset(str(path), xtr, xte, y_tr, y_te, num_classes)
