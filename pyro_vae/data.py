"""Data sets: a training set as one tensor on the training device, or streamed from a lazy source.

Where the training set fits, batches are index slices of one tensor, never collated item by item: on a
GPU the whole of MNIST is 188 MB, and indexing it costs a fraction of a training step. A training set
that does not fit (a large memory-mapped ``.npy`` file, a folder of images) stays a
:class:`~pyro_vae.streaming.RowSource` and its batches are read by a DataLoader
(:mod:`pyro_vae.streaming`); ``--loading`` chooses (:meth:`Dataset.to`). The test set and the labels
are always tensors.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import streaming
from .config import DataConfig
from .errors import CheckpointError, ConfigError, DataError
from .factors import FactorDataset, FactorSplit
from .registry import Registry
from .safety import regular_file
from .streaming import LOADINGS, MAX_WORKERS, NpyRows, RowSource, TensorRows, convert_rows

_TEST_BINARIZATION_SEED = 1  # fixed, so every run is scored on the same binary test set
_STATIC_BINARIZATION_SEED = 0
_SPLIT_SEED = 0

#: the most classes a labelled data set may have: labels are class indices 0..K-1, and K is also at
#: most the number of training points (huge labels would make M2 and the CVAE build K-wide layers)
MAX_CLASSES = 10_000
#: the training label of a row whose class is unknown (semi-supervised data: ``m2``, ``m1m2``, ...)
UNLABELLED = -1
#: how to map other class values to 0..K-1 while keeping -1 for unlabelled rows
_RELABEL = "keep = y != -1; _, y[keep] = np.unique(y[keep], return_inverse=True)"


def default_data_dir() -> Path:
    """``$PYRO_VAE_DATA`` if set, else ``~/.cache/pyro-vae``."""
    env = os.environ.get("PYRO_VAE_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyro-vae"


@dataclass
class Dataset:
    """Train and test data of shape ``(N, *x_shape)``, optional integer labels.

    ``train`` is a float32 tensor, or a :class:`~pyro_vae.streaming.RowSource` read lazily (a
    memory-mapped ``.npy`` file, a folder of images); ``test`` and the labels are tensors.
    :meth:`to` moves the data to the training device and decides whether the training set is read
    whole or streamed; :meth:`batches` reads training batches either way, with the same values.
    """

    name: str
    train: torch.Tensor | RowSource
    test: torch.Tensor
    train_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    num_classes: int | None = None
    binarize: str = "none"
    #: where a streamed training set's batches go (set by :meth:`to`)
    train_device: torch.device | None = field(default=None, repr=False)
    #: DataLoader worker processes that read a streamed training set's batches
    workers: int = field(default=0, repr=False)
    #: the dtype a streamed training set's batches are cast to (``None``: float32)
    train_dtype: torch.dtype | None = field(default=None, repr=False)
    #: the generative factors of the data, where known (:class:`~pyro_vae.factors.FactorSplit`):
    #: the disentanglement metrics need them
    factors: FactorSplit | None = field(default=None, repr=False)
    #: (train rows, test rows) of the source, where pyro-vae split it (a file with no split of its
    #: own); ``None`` where the source came split (MNIST, a .npz with x_train and x_test)
    split_rows: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return tuple(self.train.shape[1:])

    @property
    def streaming(self) -> bool:
        """Whether the training set is read lazily, batch by batch (not one tensor)."""
        return not isinstance(self.train, torch.Tensor)

    @property
    def device(self) -> torch.device:
        """The training device: where :meth:`rows` and :meth:`batches` deliver rows."""
        if isinstance(self.train, torch.Tensor):
            return self.train.device
        return self.train_device if self.train_device is not None else torch.device("cpu")

    def to(
        self,
        device: torch.device | str,
        dtype: torch.dtype | None = None,
        *,
        loading: str = "device",
        workers: int = 0,
    ) -> Dataset:
        """The data on ``device`` (``dtype``: of the images), the training set per ``loading``:

        * ``"device"``: one tensor on the device (a lazy source is read whole, in chunks, with
          ``workers`` DataLoader processes where reading decodes images; ``--binarize static``
          draws its fixed copy then);
        * ``"stream"``: a lazy source whose batches :meth:`batches` reads through a DataLoader with
          ``workers`` processes and pinned memory (a tensor is wrapped in a
          :class:`~pyro_vae.streaming.TensorRows`, so any data can stream);
        * ``"auto"``: ``"device"`` when the training set's size fits
          :func:`pyro_vae.streaming.memory_budget` (a quarter of the free CUDA memory, or of the
          host's available memory), else ``"stream"``; a tensor already on ``device`` stays.

        The test set and the labels always go to the device as tensors.
        """
        device = torch.device(device)
        if loading not in LOADINGS:
            raise ConfigError(f"unknown loading {loading!r}: choose one of {', '.join(LOADINGS)}")

        def move(t: torch.Tensor | None, is_x: bool) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if is_x and dtype else None)

        moved = replace(
            self,
            test=move(self.test, True),
            train_labels=move(self.train_labels, False),
            test_labels=move(self.test_labels, False),
            workers=workers,
        )
        train = self.train
        stream = loading == "stream"
        reason = "--loading stream reads it batch by batch"
        if loading == "auto" and isinstance(train, torch.Tensor) and train.device == device:
            stream = False  # already there: streaming it would save nothing
        elif loading == "auto":
            need = math.prod(train.shape) * (dtype.itemsize if dtype else 4)
            budget = streaming.memory_budget(device)
            stream = need > budget
            reason = (
                f"--loading auto streams it: its {_size(need)} exceed the {_size(budget)} budget on "
                f"{device} (a quarter of the free memory)"
            )
        if not stream:
            if isinstance(train, torch.Tensor):
                x = train.to(device=device, dtype=dtype)
            else:
                x = train.materialize(device, workers=workers)
                x = x if dtype is None else x.to(dtype)
            return replace(moved, train=x, train_device=None, train_dtype=None)
        if isinstance(train, torch.Tensor):
            train = TensorRows(train)
        elif train.static_seed is not None:
            raise streaming.static_refusal(reason)
        return replace(moved, train=train, train_device=device, train_dtype=dtype)

    def check(self) -> Dataset:
        """Raise a one-line :class:`DataError` unless these tensors are data pyro-vae can train on.

        The rules, for a data set built in Python as for one read from a file:

        * ``train`` and ``test`` are float32 tensors of shape ``(N, *x_shape)``, ``N >= 1``, with
          the same ``x_shape`` (at least one dimension, none of size 0) and finite values;
        * ``train`` may instead be a :class:`~pyro_vae.streaming.RowSource`: its shape is checked
          here, its values as they are read (a float ``.npy`` file up to
          :data:`~pyro_vae.streaming.SCAN_BYTES` was scanned when it was opened; a larger one fails
          on the first batch with a NaN, naming the row; any NaN that gets through shows up as a
          non-finite loss, which the trainer stops on);
        * labels are both given or both ``None``; each is a 1-D int64 tensor with one class index
          per row, at least 0 and below ``num_classes``; a training label may also be
          :data:`UNLABELLED` (-1), a row whose class is unknown (semi-supervised data);
        * ``num_classes`` (required with labels) is an integer from 1 to at most
          ``min(MAX_CLASSES, number of training points)``;
        * ``binarize`` is ``"none"``, ``"dynamic"`` or ``"static"``; data in [0, 1] unless none
          (for a lazy training set, as far as its range is known without reading it).

        Returns the data set itself, so that it chains.
        """
        if not isinstance(self.name, str):
            raise DataError(f"Dataset.name must be a string, got {self.name!r}")
        where = f"data set {self.name!r}"
        for split in ("train", "test"):
            _check_x(getattr(self, split), f"{where}: Dataset.{split}", lazy_ok=split == "train")
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
                extremes = _extremes(getattr(self, split), scan=False)
                if extremes is None:
                    continue
                lo, hi = extremes
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
                _check_labels(
                    y, x.shape[0], f"{where}: Dataset.{split}_labels", unlabelled=split == "train"
                )
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

    def with_labelled(self, labelled: torch.Tensor) -> Dataset:
        """A copy whose training rows outside the boolean mask ``labelled`` are unlabelled (their
        label :data:`UNLABELLED`): a semi-supervised split of the user's own choosing."""
        if self.train_labels is None:
            raise DataError(
                f"data set {self.name!r} has no labels to keep; give train_labels (-1 for an "
                "unlabelled row) and test_labels"
            )
        n = self.train.shape[0]
        if (
            not isinstance(labelled, torch.Tensor)
            or labelled.dtype != torch.bool
            or tuple(labelled.shape) != (n,)
        ):
            raise DataError(
                f"labelled must be a boolean tensor of shape ({n},), one flag per training row, "
                f"got {getattr(labelled, 'dtype', type(labelled).__name__)} "
                f"{tuple(getattr(labelled, 'shape', ()))}"
            )
        keep = labelled.to(self.train_labels.device)
        labels = torch.where(
            keep, self.train_labels, torch.full_like(self.train_labels, UNLABELLED)
        )
        return replace(self, train_labels=labels)

    @property
    def num_labelled(self) -> int:
        """Training rows with a known class (not :data:`UNLABELLED`); 0 without labels."""
        return 0 if self.train_labels is None else int((self.train_labels >= 0).sum())

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Training rows ``idx`` on the training device, as stored (never binarized afresh)."""
        if isinstance(self.train, torch.Tensor):
            return self.train[idx]
        self.train.refuse_static()  # the fixed draw is made when the training set is read whole
        return self.train[idx].to(device=self.device, dtype=self.train_dtype)

    def batches(self, index_batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The training rows of each index batch in turn, on the training device; under dynamic
        binarization each batch is a fresh Bernoulli draw (with the device's global RNG, in batch
        order, so every way of reading the rows gives the same draws).

        A streamed training set is read by a DataLoader (:func:`pyro_vae.streaming.read_batches`:
        :attr:`workers` processes, pinned memory, prefetching); the draws are made here, in this
        process, on the device, after the rows arrive."""
        if isinstance(self.train, torch.Tensor):
            rows: Iterator[torch.Tensor] = (self.rows(idx) for idx in index_batches)
        else:
            self.train.refuse_static()
            rows = streaming.read_batches(
                self.train,
                index_batches,
                self.device,
                workers=self.workers,
                dtype=self.train_dtype,
            )
        for x in rows:
            yield torch.bernoulli(x) if self.binarize == "dynamic" else x


def _size(nbytes: int) -> str:
    """``nbytes`` for a message: 512 bytes, 3.2 MiB, 1.5 GiB."""
    if nbytes < 1024:
        return f"{nbytes} bytes"
    value, units = nbytes / 1024, ["KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{value:.1f} {units[0]}"


def _extremes(x: torch.Tensor | RowSource, scan: bool) -> tuple[float, float] | None:
    """(min, max) of a tensor; a lazy source's bounds, read (``scan``) only where needed."""
    if isinstance(x, RowSource):
        return x.value_range(scan=scan)
    return float(x.min()), float(x.max())


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


def _check_x(x: object, where: str, lazy_ok: bool = False) -> None:
    if isinstance(x, RowSource):
        if not lazy_ok:
            raise DataError(
                f"{where} is a {type(x).__name__}; only the training set may be read lazily: pass "
                "the test set as a float32 tensor (e.g. source.materialize())"
            )
        check_rows(tuple(x.shape), where)
        x.check_values(where)  # what is known without reading the rows; the rest as they stream
        return
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


def _check_labels(y: object, n: int, where: str, unlabelled: bool = False) -> None:
    """A label tensor's type, shape and values; ``unlabelled``: -1 marks a row without a class."""
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
        _negative_label(int(y.min()), where, unlabelled)


def _negative_label(low: int, where: str, unlabelled: bool) -> None:
    """Refuse a label below 0 (below -1 where -1 marks an unlabelled training row)."""
    if unlabelled and low == UNLABELLED:
        return
    if low == UNLABELLED:
        raise DataError(
            f"{where} include -1, which marks an unlabelled row; only training rows may be "
            "unlabelled (the test labels score the model): move those rows to the training set "
            "or drop them"
        )
    raise DataError(
        f"{where} include the negative label {low}; labels are class indices 0..K-1, and -1 marks "
        f"an unlabelled training row: relabel the classes, e.g. {_RELABEL}"
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
    A source with options of its own (``--dataset-opt KEY=VALUE``) declares them as keyword-only
    parameters of its ``__call__`` (:class:`DSpritesSource`), typed and checked by the registry.
    """

    load: Callable[[DataConfig], Dataset]
    options: frozenset[str] = frozenset()
    description: str = ""

    def __call__(self, config: DataConfig) -> Dataset:
        return self.load(config)


#: name -> :class:`DatasetSource`; a path ending in .npz or .npy is read by :data:`ARRAY_FILE`
DATASETS: Registry[DatasetSource] = Registry("data set", base=DatasetSource, supplied=("config",))


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


@dataclass(frozen=True)
class DSpritesSource(DatasetSource):
    """``--dataset dsprites``: the rendered dSprites (:mod:`pyro_vae.dsprites`), split at random
    (fixed by ``split_seed``) into ``test_size`` test images and ``size`` training images (all
    the rest when ``size`` is None: 737,280 less the test set, rendered as batches are read). The
    factor labels come along (``Dataset.factors``) for the disentanglement metrics."""

    def __call__(
        self,
        config: DataConfig,
        *,
        size: int | None = None,
        test_size: int = 5000,
        split_seed: int = 0,
    ) -> Dataset:
        from . import dsprites

        n = dsprites.NUM_IMAGES
        if not 1 <= test_size < n:
            raise ConfigError(f"dsprites test_size must lie in 1..{n - 1}, got {test_size}")
        room = n - test_size
        if size is not None and not 1 <= size <= room:
            raise ConfigError(
                f"dsprites size must lie in 1..{room} (the images less the {test_size} test "
                f"ones), got {size}"
            )
        perm = np.random.default_rng(split_seed).permutation(n)
        test_idx = np.sort(perm[:test_size])
        train_idx = np.sort(perm[test_size : test_size + (room if size is None else size)])
        source = dsprites.DSprites()
        train = dsprites.DSpritesRows().select(train_idx)
        test = source.observations(test_idx)
        return Dataset("dsprites", train, test, factors=FactorSplit(source, test_idx))


DATASETS.register("dsprites")(
    DSpritesSource(
        lambda c: DSpritesSource.__call__(DATASETS.get("dsprites"), c),
        frozenset(),
        "the rendered dSprites, 737,280 images with 5 factors (--dataset-opt size=N)",
    )
)

#: a .npz (x, y or x_train, x_test, y_train, y_test) or .npy (x) file named by its path; a .npy file
#: is memory-mapped and its training rows read lazily (:class:`~pyro_vae.streaming.NpyRows`)
ARRAY_FILE = DatasetSource(
    lambda c: _array_file(
        Path(c.dataset).expanduser(), c.test_fraction, c.test_fraction != DataConfig().test_fraction
    ),
    frozenset({"test_fraction"}),
    "a .npz or .npy file",
)
#: ``folder:PATH``: a folder of images, unlabelled or in one subfolder per class
FOLDER_PREFIX = "folder:"
IMAGE_FOLDER = DatasetSource(
    lambda c: _image_folder(c),
    frozenset({"test_fraction", "image_size", "image_mode"}),
    "folder:PATH, a folder of images (in class subfolders for labels), read lazily",
)


def dataset_source(name: str) -> DatasetSource:
    """The registered data set ``name``, the array-file reader for a .npz/.npy path, or the image
    folder reader for ``folder:PATH``."""
    if isinstance(name, str) and name not in DATASETS and name.endswith((".npz", ".npy")):
        return ARRAY_FILE
    if isinstance(name, str) and name not in DATASETS and name.startswith(FOLDER_PREFIX):
        if not name[len(FOLDER_PREFIX) :].strip():
            raise ConfigError(
                "--dataset folder: needs the folder's path, e.g. --dataset folder:~/images"
            )
        return IMAGE_FOLDER
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
            "path of a .npz or .npy file or folder:PATH for a folder of images, or --import the "
            "module that registers it"
        ) from None


#: the data options that only some data sets read (the others apply to every data set)
_SOURCE_OPTIONS = ("data_dir", "test_fraction", "image_size", "image_mode")


def dataset_options(config: DataConfig) -> dict[str, object]:
    """``--dataset-opt`` options checked against the data set's signature and typed; refused for a
    data set that takes none."""
    if isinstance(config.dataset, str) and config.dataset in DATASETS:
        return DATASETS.options(config.dataset, config.dataset_options)
    if config.dataset_options:
        raise ConfigError(
            f"--dataset {config.dataset} takes no --dataset-opt; it was given "
            f"{', '.join(sorted(config.dataset_options))}"
        )
    return {}


def check_data_options(config: DataConfig) -> None:
    """Refuse data options the chosen data set does not read (e.g. --data-dir for digits), and
    values no data set can use (:func:`check_data_values`)."""
    check_data_values(config)
    source = dataset_source(config.dataset)
    dataset_options(config)
    defaults = DataConfig()
    for name in _SOURCE_OPTIONS:
        if getattr(config, name) != getattr(defaults, name) and name not in source.options:
            takers = [n for n in DATASETS if name in DATASETS.get(n).options]
            if name in ARRAY_FILE.options:
                takers.append(".npz/.npy files")
            if name in IMAGE_FOLDER.options:
                takers.append("folder:PATH")
            raise ConfigError(
                f"--{name.replace('_', '-')} is not used by --dataset {config.dataset}; it is read "
                f"by {', '.join(takers)}"
            )


def check_data_values(config: DataConfig) -> None:
    """Refuse values no data set can use (--binarize, --test-fraction, --image-size, --image-mode,
    --loading, --workers), whichever data set is named: a received run's data may not exist here,
    and its configuration is still checked."""
    if config.binarize not in ("none", "dynamic", "static"):
        raise ConfigError(
            f"unknown binarization {config.binarize!r}: choose one of none, dynamic, static"
        )
    if not 0 < config.test_fraction < 1:
        raise ConfigError(f"--test-fraction must lie in (0, 1), got {config.test_fraction!r}")
    defaults = DataConfig()
    streaming.image_options(config.image_size, config.image_mode)
    if config.loading not in LOADINGS:
        raise ConfigError(
            f"unknown --loading {config.loading!r}: choose auto (the training set on the device "
            "when it fits, else streamed), device or stream"
        )
    w = config.workers
    if isinstance(w, bool) or not isinstance(w, numbers.Integral) or not 0 <= w <= MAX_WORKERS:
        raise ConfigError(f"--workers must be a whole number in 0..{MAX_WORKERS}, got {w!r}")
    if config.loading == "device" and w != defaults.workers:
        raise ConfigError(
            f"--workers {w} sets the DataLoader processes that stream the training set, but "
            "--loading device reads it whole onto the device; drop --workers, or use --loading "
            "stream (or auto)"
        )
    if config.loading == "stream" and config.binarize == "static":
        raise streaming.static_refusal("--loading stream reads it batch by batch")


def received_data_dir(config: DataConfig, data_dir: str | Path | None = None) -> str | None:
    """The data folder a loaded run reads its data set from: ``data_dir`` when given (it must be
    one the data set reads), else the run's own, which must exist here: a run from another machine
    names folders of that machine, and loading it must not create them nor download into them."""
    source = dataset_source(config.dataset)
    if data_dir is not None:
        if "data_dir" not in source.options:
            raise ConfigError(
                f"--data-dir is not used by the run's data set {config.dataset}; it is read by "
                f"{', '.join(n for n in DATASETS if 'data_dir' in DATASETS.get(n).options)}"
            )
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise ConfigError(f"--data-dir {data_dir}: no such folder")
        return str(data_dir)
    if config.data_dir is None or "data_dir" not in source.options:
        return config.data_dir
    if not Path(config.data_dir).expanduser().is_dir():
        raise CheckpointError(
            f"the run's data set {config.dataset} was read from {config.data_dir}, which does not "
            "exist on this machine; give the folder that holds it here (--data-dir DIR, "
            "load_run(..., data_dir=DIR))"
        )
    return config.data_dir


def load_dataset(config: DataConfig) -> Dataset:
    """Load ``config.dataset`` on the CPU, scaled to [0, 1] where it is image data, and binarize it.

    The training set of a .npy file or an image folder is a lazy
    :class:`~pyro_vae.streaming.RowSource` (nothing is read whole until :meth:`Dataset.to`); the
    registered data sets and .npz files are tensors. The data are checked by :meth:`Dataset.check`
    (a registered source may return anything)."""
    return binarize(_load_checked(config), config.binarize)


def _load_checked(config: DataConfig) -> Dataset:
    ds = dataset_source(config.dataset)(config, **dataset_options(config))
    if not isinstance(ds, Dataset):
        raise DataError(
            f"the data set {config.dataset!r} loaded a {type(ds).__name__}, not a "
            "pyro_vae.data.Dataset; its loader must return one"
        )
    return ds.check()


def load_rows(
    config: DataConfig,
) -> tuple[Dataset, None] | tuple[None, tuple[torch.Tensor, torch.Tensor | None]]:
    """What a command that reads data (``score --data FILE``) reads, loading the source once:

    * ``(None, (x, labels))``: every row of a source that has no split of its own (a .npz with
      ``x``, a .npy file, an image folder), in the source's order, prepared as a test split is
      (binarized with the fixed test seed under ``--binarize dynamic`` or ``static``);
    * ``(dataset, None)``: the data set as :func:`load_dataset` gives it, for a source that comes
      split (MNIST, a .npz with ``x_train`` and ``x_test``): choose a split of it.
    """
    ds = _load_checked(config)
    if ds.split_rows is None:
        return binarize(ds, config.binarize), None
    tr, te = ds.split_rows
    train = ds.train if isinstance(ds.train, torch.Tensor) else ds.train.materialize()
    x = torch.empty((len(tr) + len(te), *ds.x_shape), dtype=ds.test.dtype)
    x[tr], x[te] = train, ds.test
    y = None
    if ds.train_labels is not None and ds.test_labels is not None:
        y = torch.empty(x.shape[0], dtype=ds.train_labels.dtype)
        y[tr], y[te] = ds.train_labels, ds.test_labels
    if config.binarize != "none":
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"binarization draws pixels as Bernoulli(x), so x must lie in [0, 1]; "
                f"the data range over [{lo:g}, {hi:g}]"
            )
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(_TEST_BINARIZATION_SEED))
    return None, (x, y)


def fingerprint(ds: Dataset) -> str:
    """A hash of the data's values and labels: ``--resume`` and ``load_run`` check that they are the
    data the run was trained on.

    A lazy training set is hashed by what identifies it (the file's resolved path, size and
    modification time, the reading options and the split's rows:
    :meth:`~pyro_vae.streaming.RowSource.fingerprint_into`), which is cheap for huge files and
    changes when the file does; a ``.npy`` training set of at most
    :data:`~pyro_vae.streaming.VALUE_HASH_BYTES` (float32) is hashed by its values, as a tensor is.
    """
    h = hashlib.blake2b(digest_size=16)
    for t in (ds.train, ds.test, ds.train_labels, ds.test_labels):
        if t is None:
            h.update(b"none")
            continue
        if isinstance(t, RowSource):
            t.fingerprint_into(h)
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
        lo, hi = _extremes(split, scan=True)  # a large float file is read once for its range
        if lo < 0 or hi > 1:
            raise DataError(
                f"binarization draws pixels as Bernoulli(x), so x must lie in [0, 1]; "
                f"the data range over [{lo:g}, {hi:g}]"
            )
    g = torch.Generator().manual_seed(_TEST_BINARIZATION_SEED)
    test = torch.bernoulli(ds.test, generator=g)
    train = ds.train
    if mode == "static":
        if isinstance(train, RowSource):  # drawn when it is read whole; refused if it streams
            train = train.with_static_draw(_STATIC_BINARIZATION_SEED)
        else:
            train = torch.bernoulli(
                ds.train, generator=torch.Generator().manual_seed(_STATIC_BINARIZATION_SEED)
            )
    return replace(ds, train=train, test=test, binarize=mode)


def _split_indices(n: int, test_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, test rows) of ``n``: a fixed permutation, the first share for the test set."""
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise DataError(f"{n} data points are too few to split into train and test sets")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_SPLIT_SEED))
    return perm[n_test:], perm[:n_test]


def _split(x: torch.Tensor, y: torch.Tensor | None, test_fraction: float) -> tuple:
    tr, te = _split_indices(x.shape[0], test_fraction)
    return x[tr], x[te], (y[tr] if y is not None else None), (y[te] if y is not None else None)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: (pixels ``(1797, 64)`` in 0..16, labels), as
    ``sklearn.datasets.load_digits`` reads them.

    The CSV file scikit-learn ships is read directly where it is found, since importing
    ``sklearn.datasets`` (all of scikit-learn and SciPy) takes seconds, more than the training of
    a small model on it; elsewhere ``load_digits`` reads it."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                data = np.loadtxt(f, delimiter=",")
            return data[:, :-1], data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data, d.target


def _digits(test_fraction: float) -> Dataset:
    pixels, labels = digits_arrays()
    x = torch.as_tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.as_tensor(labels, dtype=torch.long)
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


def _check_kind(a: np.ndarray, where: str) -> None:
    check_rows(a.shape, where)
    if a.dtype.kind not in "biuf":  # complex, strings, objects, dates, records
        raise DataError(
            f"{where}: expected a real numeric array, got dtype {a.dtype}; save float or 8-bit "
            "integer pixel values"
        )


def _integer_scale(lo: int, hi: int, path: Path) -> float:
    """What integer data are divided by: 1 for binary 0/1, 255 for 8-bit pixels; else refused."""
    if lo < 0 or hi > 255:
        raise DataError(
            f"{path}: integer data are read as binary 0/1 or as 8-bit pixels 0..255 (divided "
            f"by 255), but these range over [{lo}, {hi}]; save them as floats scaled as the "
            "model needs"
        )
    return 1.0 if hi <= 1 else 255.0


def _as_images(arrays: dict[str, np.ndarray], path: Path) -> dict[str, torch.Tensor]:
    """The data arrays of one file as float32 tensors ``(N, *x_shape)``; ``(N, H, W)`` gets a channel.

    Floats are kept as they are. Integer (and boolean) arrays are read jointly (train and test
    alike): all in {0, 1}, as binary data; otherwise in 0..255, as 8-bit pixels divided by 255; anything
    else is refused, since no scale can be guessed for it.
    """
    for key, a in arrays.items():
        _check_kind(a, f"{path}: array {key!r}")
    ints = [a for a in arrays.values() if a.dtype.kind in "biu"]
    scale = 1.0
    if ints:
        scale = _integer_scale(
            min(int(a.min()) for a in ints), max(int(a.max()) for a in ints), path
        )
    out = {}
    for key, a in arrays.items():
        x = convert_rows(a, scale)
        if not torch.isfinite(x).all():
            raise DataError(
                f"{path}: array {key!r} contains NaN or infinite values (or values beyond "
                "float32's range); clean or impute them first"
            )
        out[key] = x
    return out


def _as_labels(a: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    """Class labels as a 1-D int64 tensor: whole numbers from 0 (or -1, an unlabelled row, except
    in ``y_test``), one per datum; (N, 1) squeezed."""
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
            f"{where} have dtype {a.dtype}; labels are integer class indices 0..K-1 (-1: an "
            "unlabelled row): map names to integers first (e.g. np.unique(y, return_inverse=True))"
        )
    if a.size and a.min() < 0:
        _negative_label(int(max(a.min(), -(2**62))), where, unlabelled=key != "y_test")
    if a.max() >= MAX_CLASSES:  # before the cast: 1e30 or uint64 values would wrap around
        _check_class_count(int(min(a.max(), 2**62)) + 1, None, str(path))
    return torch.as_tensor(a.astype(np.int64))


def _array_file(path: Path, test_fraction: float, fraction_given: bool = False) -> Dataset:
    if not path.exists():
        raise DataError(f"no such data file: {path}")
    regular_file(path, "data file")  # a FIFO would block for ever
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"cannot read {path}: {streaming.one_line(e)}") from None
    if magic == b"\x93NUMPY":
        return _npy(path, test_fraction)
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
    if isinstance(loaded, np.ndarray):  # not reached for a .npy file, memory-mapped by _npy
        x = _as_images({"x": loaded}, path)["x"]
        xtr, xte, _, _ = _split(x, None, test_fraction)
        return Dataset(str(path), xtr, xte, split_rows=_split_indices(x.shape[0], test_fraction))
    with loaded:
        return _npz(loaded, path, test_fraction, fraction_given)


def _npz(
    loaded: np.lib.npyio.NpzFile, path: Path, test_fraction: float, fraction_given: bool
) -> Dataset:
    keys = set(loaded.files)
    y_tr = y_te = split_rows = None
    factors = None
    if "factors" in keys and "x" not in keys:
        raise DataError(
            f"{path}: 'factors' label the rows of 'x' (one row of factor labels per datum); save "
            "the data as one array 'x' with its 'factors', and the test split is drawn from them"
        )
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
        if y is not None and bool((y == UNLABELLED).any()):
            # the test set needs known classes: it comes from the labelled rows, and every
            # unlabelled row trains
            known, unknown = (y >= 0).nonzero().squeeze(-1), (y < 0).nonzero().squeeze(-1)
            if known.numel() < 2:
                raise DataError(
                    f"{path}: {known.numel()} labelled rows in 'y' (the rest are -1) are too few "
                    "to split off a labelled test set; label more rows or give x_test and y_test"
                )
            tr, te = _split_indices(known.numel(), test_fraction)
            split_rows = (torch.cat([known[tr], unknown]), known[te])
            xtr, xte = x[split_rows[0]], x[split_rows[1]]
            y_tr, y_te = y[split_rows[0]], y[split_rows[1]]
        else:
            xtr, xte, y_tr, y_te = _split(x, y, test_fraction)
            split_rows = _split_indices(x.shape[0], test_fraction)
        if "factors" in keys:
            names = _read(loaded, "factor_names", path) if "factor_names" in keys else None
            try:
                source = FactorDataset(
                    _read(loaded, "factors", path),
                    x=x,
                    factor_names=None if names is None else [str(n) for n in names],
                )
            except DataError as e:
                raise DataError(f"{path}: {e}") from None
            factors = FactorSplit(source, split_rows[1].numpy())
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
    return Dataset(
        str(path), xtr, xte, y_tr, y_te, num_classes, split_rows=split_rows, factors=factors
    )


def _npy(path: Path, test_fraction: float) -> Dataset:
    """A .npy file, memory-mapped: the test rows are read (a tensor), the training rows stay a lazy
    :class:`~pyro_vae.streaming.NpyRows`. Converted as :func:`_as_images` converts arrays, and split
    as :func:`_split` splits them, so the values are those of reading the file whole."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        if "Python objects" in str(e) or "Object arrays" in str(e):
            raise DataError(
                f"{path} holds Python objects (an object array); save numeric arrays only "
                "(e.g. np.asarray(x, dtype=np.float32))"
            ) from None
        if "mmap length" in str(e):
            raise DataError(
                f"cannot read {path} as a NumPy array file: it is shorter than its header says "
                "(truncated); write or download it again"
            ) from None
        raise DataError(
            f"cannot read {path} as a NumPy array file: {streaming.one_line(e)}"
        ) from None
    except Exception as e:
        raise DataError(
            f"cannot read {path} as a NumPy array file: {streaming.one_line(e)}"
        ) from None
    _check_kind(a, f"{path}: array 'x'")
    source = NpyRows(path, a)
    if a.dtype.kind in "biu":  # one pass over the file for the scale, as _as_images reads it
        lo, hi = source.raw_extremes()
        source.scale = _integer_scale(int(lo), int(hi), path)
        source.set_integer_range(int(lo), int(hi))
    elif a.nbytes <= streaming.SCAN_BYTES:
        source.scan()  # NaN and infinities refused now; a larger file's rows are checked as read
    tr, te = _split_indices(len(source), test_fraction)
    test = source.select(te).materialize()
    return Dataset(str(path), source.select(tr), test, split_rows=(tr, te))


def _image_folder(config: DataConfig) -> Dataset:
    """``folder:PATH``: the images' headers checked now, the test split decoded (with
    ``config.workers`` DataLoader processes), the training split left to read lazily."""
    path = config.dataset[len(FOLDER_PREFIX) :]
    source, labels, classes = streaming.scan_folder(path, config.image_size, config.image_mode)
    tr, te = _split_indices(len(source), config.test_fraction)
    w = config.workers
    workers = w if isinstance(w, int) and not isinstance(w, bool) and 0 <= w <= MAX_WORKERS else 0
    test = source.select(te).materialize(workers=workers)
    y_tr = y_te = num_classes = None
    if labels is not None and classes is not None:
        y = torch.as_tensor(labels)
        y_tr, y_te = y[tr], y[te]
        num_classes = len(classes)
        _check_class_count(num_classes, tr.shape[0], config.dataset)
    return Dataset(
        config.dataset, source.select(tr), test, y_tr, y_te, num_classes, split_rows=(tr, te)
    )
