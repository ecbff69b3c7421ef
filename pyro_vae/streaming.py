"""Training sets read row by row: memory-mapped ``.npy`` files, folders of images, CPU tensors.

A :class:`RowSource` is a training set that is not one tensor on the device: it knows its shape and
reads any rows on request, as float32 CPU tensors converted exactly as the in-memory path converts
them, so that streaming a data set and loading it whole give bit-identical batches.
:meth:`pyro_vae.data.Dataset.to` either reads a source whole onto the device
(:meth:`RowSource.materialize`) or keeps it and streams its batches through a
:class:`torch.utils.data.DataLoader` (:func:`read_batches`): worker processes read the rows, the
batches come back in pinned memory and are copied to the GPU without blocking.

* :class:`NpyRows`: a ``.npy`` file opened with ``np.load(path, mmap_mode="r")``; nothing is copied
  until rows are read. Integer data are scanned once, in chunks, for their range (binary 0/1 or 8-bit
  0..255); float data are scanned for NaN and infinities when the file is at most
  :data:`SCAN_BYTES`, larger float files are checked batch by batch as they are read.
* :class:`FolderRows`: image files read with PIL, converted to L or RGB and resized with torchvision
  (:func:`scan_folder` checks every header before training starts).
* :class:`TensorRows`: a CPU tensor, so that the streaming path runs on any data.

A source of your own subclasses :class:`RowSource` and implements :meth:`RowSource._read` and
:meth:`RowSource.identity`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import numbers
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DataError
from .safety import check_allocation, die_with_parent, stops_deferred

#: a float ``.npy`` file up to this size is scanned for NaN and infinite values (and its range) when
#: it is opened; a larger one is checked batch by batch as its rows are read
SCAN_BYTES = 1 << 30
#: a ``.npy`` training set whose float32 size is at most this is fingerprinted by its values (as an
#: in-memory tensor is, so runs trained before streaming existed still resume); a larger one by the
#: file's identity (path, size, modification time) and the reading options
VALUE_HASH_BYTES = 256 << 20
#: how much a source reads at once when it is read whole (materialised)
CHUNK_BYTES = 64 << 20
#: the ``--loading`` modes
LOADINGS = ("auto", "device", "stream")
#: the most ``--workers``
MAX_WORKERS = 64


def memory_budget(device: torch.device | str) -> int:
    """Bytes that ``--loading auto`` lets a training set take on ``device``: a quarter of the free
    CUDA memory, or a quarter of the host's available memory for the CPU (and other devices).

    Tests monkeypatch ``pyro_vae.streaming.memory_budget``."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free) // 4
    return available_host_memory() // 4


def available_host_memory() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (free memory plus the page cache that can be dropped),
    else the free pages (``os.sysconf("SC_AVPHYS_PAGES")``), else 0."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def one_line(text: object) -> str:
    """``text`` with its line breaks replaced, to quote a library's message in ours."""
    return " ".join(str(text).split())


def convert_rows(a: np.ndarray, scale: float) -> torch.Tensor:
    """Rows of an array file as float32 ``(n, *x_shape)``: the one conversion of array data.

    Integer and boolean arrays are divided by ``scale`` (1 for binary data, 255 for 8-bit pixels);
    floats are cast to float32 (values beyond its range become infinite, which the callers refuse);
    ``(n, H, W)`` gains a channel: ``(n, 1, H, W)``.
    """
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype.kind in "biu":
        x = torch.as_tensor(a.astype(np.float32) / np.float32(scale))
    else:
        x = torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)
    if x.ndim == 3:  # (N, H, W): one channel
        x = x.unsqueeze(1)
    return x


def static_refusal(reason: str) -> ConfigError:
    """The error for ``--binarize static`` on a training set that streams."""
    return ConfigError(
        f"--binarize static draws one fixed binary copy of the whole training set, so it needs the "
        f"training set in memory, but {reason}; use --binarize dynamic (a fresh draw every epoch), "
        "or --loading device where it fits, or save a binarized copy of the data"
    )


class RowSource:
    """A training set read row by row: shape ``(N, *x_shape)``, float32, rows on request.

    ``source[idx]`` (a LongTensor on any device, an int, a slice, a list or an array of positions)
    and ``source.__getitems__(positions)`` (the DataLoader's batched fetch) return those rows as a
    float32 CPU tensor. :meth:`select` gives a source of some of the rows (a split), without reading
    anything. :meth:`materialize` reads the whole source into one tensor.

    A subclass implements :meth:`_read` (rows of the underlying data, by their index there) and
    :meth:`identity` (what :func:`pyro_vae.data.fingerprint` hashes instead of the values), and may
    override :meth:`value_range` and :meth:`check_values`.
    """

    dtype = torch.float32
    #: whether reading is slow enough to spread over DataLoader workers when read whole (decoding)
    parallel_reads = False
    #: the rows a chunk holds when the source is read whole
    chunk_rows = 1024

    def __init__(self, n: int, x_shape: Sequence[int]) -> None:
        self._n = int(n)
        self._x_shape = tuple(int(s) for s in x_shape)
        #: positions -> rows of the underlying data (``None``: all of them, in order)
        self._rows: np.ndarray | None = None
        #: with a seed, :meth:`materialize` returns one Bernoulli draw of the rows (``--binarize
        #: static``, a draw of the whole set at once); ``source[idx]`` still reads the rows as
        #: stored (for checks), and :class:`~pyro_vae.data.Dataset` refuses to train on them
        #: batch by batch
        self.static_seed: int | None = None

    # --- the tensor-like surface ---

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._x_shape))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def ndim(self) -> int:
        return 1 + len(self._x_shape)

    def dim(self) -> int:
        return self.ndim

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The size of the rows as float32."""
        return self.numel() * 4

    def __len__(self) -> int:
        return self._n if self._rows is None else int(self._rows.shape[0])

    def __getitem__(self, idx: Any) -> torch.Tensor:
        if isinstance(idx, numbers.Integral) and not isinstance(idx, bool):
            return self.read(self._positions(np.asarray([int(idx)])))[0]
        if isinstance(idx, torch.Tensor) and idx.dim() == 0:
            return self.read(self._positions(np.asarray([int(idx)])))[0]
        if isinstance(idx, slice):
            return self.read(np.arange(len(self), dtype=np.int64)[idx])
        return self.read(self._positions(idx))

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        """The rows ``indices`` as one batch (the DataLoader's fetch of a whole batch)."""
        return self.read(self._positions(indices))

    def to(
        self,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        non_blocking: bool = False,
    ) -> torch.Tensor:
        """The whole source as one tensor (as ``Tensor.to`` would move it): :meth:`materialize`."""
        x = self.materialize(device if device is not None else "cpu")
        return x if dtype is None else x.to(dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()}, shape={tuple(self.shape)})"

    # --- what subclasses provide ---

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        """Rows ``rows`` (int64 indices into the underlying data) as float32 ``(n, *x_shape)``."""
        raise NotImplementedError

    def identity(self) -> bytes:
        """What identifies the data without reading them: the file's path, size and modification
        time and the reading options (the row selection is added by :meth:`fingerprint_into`)."""
        raise NotImplementedError

    def describe(self) -> str:
        """A few words for messages: the file or folder."""
        return type(self).__name__

    def value_range(self, scan: bool = True) -> tuple[float, float] | None:
        """Bounds the values lie within, or ``None`` when they are not known without reading every
        row (``scan=False``) or at all."""
        return None

    def check_values(self, where: str) -> None:
        """Raise :class:`DataError` if values known without reading the data are bad (NaN)."""

    def hash_by_value(self) -> bool:
        """Whether :func:`pyro_vae.data.fingerprint` hashes the values rather than the identity."""
        return False

    # --- reading ---

    def _positions(self, idx: Any) -> np.ndarray:
        """``idx`` as int64 positions in ``0..len-1`` (negative ones counted from the end)."""
        if isinstance(idx, torch.Tensor):
            if idx.dtype == torch.bool:
                raise IndexError("a RowSource is indexed by positions, not by a boolean mask")
            pos = idx.detach().reshape(-1).cpu().numpy().astype(np.int64, copy=False)
        else:
            pos = np.asarray(idx)
            if pos.dtype == np.bool_ or (pos.size and pos.dtype.kind not in "iu"):
                raise IndexError(f"a RowSource is indexed by integer positions, got {pos.dtype}")
            pos = pos.reshape(-1).astype(np.int64, copy=False)
        n = len(self)
        if pos.size and (pos.min() < -n or pos.max() >= n):
            bad = int(pos[(pos < -n) | (pos >= n)][0])
            raise IndexError(f"row {bad} is out of range for {n} rows")
        return np.where(pos < 0, pos + n, pos)

    def read(self, positions: np.ndarray) -> torch.Tensor:
        """Rows at ``positions`` (valid int64 positions) as a float32 CPU tensor, in that order."""
        rows = positions if self._rows is None else self._rows[positions]
        if rows.size == 0:
            return torch.empty((0, *self._x_shape), dtype=torch.float32)
        return self._read(rows)

    def refuse_static(self) -> None:
        """:class:`ConfigError` if a static draw is pending: its batches would not be drawn."""
        if self.static_seed is not None:
            raise static_refusal(
                f"its rows were asked for one batch at a time ({self.describe()}); read it whole "
                "first with Dataset.to(device)"
            )

    def select(self, positions: np.ndarray | torch.Tensor | Sequence[int]) -> RowSource:
        """A source of the rows at ``positions`` of this one (a split), reading nothing."""
        pos = self._positions(positions)
        out = copy.copy(self)
        out._rows = pos if self._rows is None else self._rows[pos]
        return out

    def with_static_draw(self, seed: int) -> RowSource:
        """This source, read whole as one Bernoulli draw (``torch.bernoulli`` of the float32 tensor
        with a CPU generator seeded ``seed``, the draw of an in-memory training set)."""
        out = copy.copy(self)
        out.static_seed = seed
        return out

    def _whole_chunks(self) -> list[np.ndarray]:
        """Positions in chunks, each chunk's rows ascending in the underlying data (so a file is
        read front to back)."""
        n = len(self)
        order = (
            np.arange(n, dtype=np.int64)
            if self._rows is None
            else np.argsort(self._rows, kind="stable").astype(np.int64)
        )
        step = max(1, int(self.chunk_rows))
        return [order[i : i + step] for i in range(0, n, step)]

    def materialize(self, device: torch.device | str = "cpu", *, workers: int = 0) -> torch.Tensor:
        """The whole source as one float32 tensor on ``device``, read in chunks (and with
        ``workers`` DataLoader processes where reading is slow, e.g. decoding images)."""
        device = torch.device(device)
        check_allocation(
            4 * math.prod(self.shape),
            f"reading {self.describe()} whole ({len(self)} rows of shape "
            f"{tuple(self.shape[1:])}, float32)",
            "use fewer or smaller images (--image-size)",
            device,
        )
        if self.static_seed is not None:
            x = self._materialize(torch.device("cpu"), workers)
            g = torch.Generator().manual_seed(self.static_seed)
            return torch.bernoulli(x, generator=g).to(device)
        return self._materialize(device, workers)

    def _materialize(self, device: torch.device, workers: int) -> torch.Tensor:
        out = torch.empty(tuple(self.shape), dtype=torch.float32, device=device)
        chunks = self._whole_chunks()
        in_order = self._rows is None
        w = workers if self.parallel_reads else 0
        for pos, x in zip(chunks, read_batches(self, chunks, device, workers=w)):
            if in_order:
                out[int(pos[0]) : int(pos[0]) + pos.shape[0]] = x
            else:
                out.index_copy_(0, torch.from_numpy(pos).to(device), x)
        return out

    def chunks(self) -> Iterator[torch.Tensor]:
        """The rows in order, a chunk at a time (float32 CPU tensors)."""
        step = max(1, int(self.chunk_rows))
        for i in range(0, len(self), step):
            yield self.read(np.arange(i, min(i + step, len(self)), dtype=np.int64))

    def fingerprint_into(self, h: Any) -> None:
        """Feed this training set to the hash ``h`` of :func:`pyro_vae.data.fingerprint`."""
        if self.hash_by_value():
            h.update(f"{self.dtype}{tuple(self.shape)}".encode())
            if self.static_seed is not None:
                h.update(self.materialize().numpy().tobytes())
            else:
                for x in self.chunks():
                    h.update(x.contiguous().numpy().tobytes())
            return
        h.update(type(self).__name__.encode())
        h.update(self.identity())
        h.update(f"{tuple(self.shape)} static={self.static_seed}".encode())
        rows = self._rows
        h.update(b"all" if rows is None else hashlib.blake2b(rows.tobytes()).digest())


class TensorRows(RowSource):
    """Rows of a CPU tensor: the streaming path for data already in memory (``--loading stream``
    on any data set), fingerprinted by value like the tensor itself."""

    def __init__(self, x: torch.Tensor) -> None:
        x = x.detach()
        super().__init__(x.shape[0], x.shape[1:])
        self.tensor = x.cpu().contiguous()
        self.chunk_rows = max(1, CHUNK_BYTES // max(1, 4 * math.prod(self._x_shape)))
        self._range: tuple[float, float] | None = None

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        return self.tensor[torch.from_numpy(rows)].to(torch.float32)

    def _materialize(self, device: torch.device, workers: int) -> torch.Tensor:
        x = self.tensor if self._rows is None else self.tensor[torch.from_numpy(self._rows)]
        return x.to(device=device, dtype=torch.float32, copy=True)

    def identity(self) -> bytes:
        return b""

    def hash_by_value(self) -> bool:
        return True

    def describe(self) -> str:
        return "a tensor"

    def value_range(self, scan: bool = True) -> tuple[float, float] | None:
        if self._range is None and self.tensor.numel():
            self._range = (float(self.tensor.min()), float(self.tensor.max()))
        return self._range

    def check_values(self, where: str) -> None:
        if self.tensor.dtype != torch.float32:
            raise DataError(f"{where} wraps a tensor of dtype {self.tensor.dtype}; pass float32")
        if not torch.isfinite(self.tensor).all():
            raise DataError(f"{where} contains NaN or infinite values; clean or impute them first")


class NpyRows(RowSource):
    """A ``.npy`` file, memory-mapped: rows are read (and converted by :func:`convert_rows`) only
    when asked for, so no copy of the file is made until then.

    ``scale`` divides integer data (1: binary, 255: 8-bit pixels). Float files are checked for NaN
    and infinities once (:meth:`scan`, run on opening files up to :data:`SCAN_BYTES`, and on
    binarizing any) or else in every batch read, which then fails with a :class:`DataError` naming
    the file and the row.
    """

    def __init__(self, path: Path | str, array: np.ndarray | None = None, scale: float = 1.0):
        self.path = Path(path).resolve()
        if array is None:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        st = os.stat(self.path)
        self._stat = (st.st_size, st.st_mtime_ns)
        shape = tuple(array.shape)
        super().__init__(shape[0], (1, *shape[1:]) if len(shape) == 3 else shape[1:])
        self._array: np.ndarray | None = array
        self.file_dtype = array.dtype
        self.file_shape = shape
        self.fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
        self.scale = float(scale)
        row_bytes = max(
            1, 4 * math.prod(self._x_shape), array.dtype.itemsize * math.prod(shape[1:])
        )
        self.chunk_rows = max(1, CHUNK_BYTES // row_bytes)
        self._range: tuple[float, float] | None = None
        self._finite = array.dtype.kind != "f"

    @property
    def array(self) -> np.ndarray:
        """The memory-mapped array (mapped again after unpickling, in a spawned worker)."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_array"] = None  # a worker maps the file itself rather than receiving a copy
        return state

    def describe(self) -> str:
        return str(self.path)

    def raw_extremes(self) -> tuple[Any, Any]:
        """The least and greatest stored value, scanning the whole file once in chunks."""
        a = self.array
        lo = hi = None
        for i in range(0, a.shape[0], self.chunk_rows):
            c = np.asarray(a[i : i + self.chunk_rows])
            clo, chi = c.min(), c.max()
            lo = clo if lo is None else min(lo, clo)
            hi = chi if hi is None else max(hi, chi)
        return lo, hi

    def scan(self) -> None:
        """Read every row once, in chunks: refuse NaN and infinities, note the range."""
        a = self.array
        lo, hi = math.inf, -math.inf
        for i in range(0, a.shape[0], self.chunk_rows):
            x = convert_rows(np.array(a[i : i + self.chunk_rows]), self.scale)
            if not torch.isfinite(x).all():
                raise self._non_finite()
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
        self._finite = True
        self._range = (lo, hi)

    def set_integer_range(self, lo: int, hi: int) -> None:
        self._range = (lo / self.scale, hi / self.scale)

    def _non_finite(self, row: int | None = None) -> DataError:
        at = "" if row is None else f" (row {row} of the file)"
        return DataError(
            f"{self.path}: array 'x' contains NaN or infinite values (or values beyond float32's "
            f"range){at}; clean or impute them first"
        )

    def value_range(self, scan: bool = True) -> tuple[float, float] | None:
        if self._range is None and scan:
            self.scan()
        return self._range

    def hash_by_value(self) -> bool:
        return self.nbytes <= VALUE_HASH_BYTES

    def identity(self) -> bytes:
        return (
            f"{self.path}|{self._stat[0]}|{self._stat[1]}|{self.file_dtype.str}|{self.file_shape}|"
            f"fortran={self.fortran}|scale={self.scale}"
        ).encode()

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        ascending = rows.size < 2 or bool((rows[1:] > rows[:-1]).all())
        if ascending and int(rows[-1]) - int(rows[0]) + 1 == rows.size:  # one contiguous run
            block = np.array(self.array[int(rows[0]) : int(rows[-1]) + 1])
            order = None
        else:
            order = None if ascending else np.argsort(rows, kind="stable")
            block = np.asarray(self.array[rows if order is None else rows[order]])
        x = convert_rows(block, self.scale)
        if not self._finite:
            bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
            if bad.any():
                i = int(bad.nonzero()[0, 0])
                raise self._non_finite(int(rows[i] if order is None else rows[order][i]))
        if order is not None:  # back from file order to the order asked for
            out = torch.empty_like(x)
            out[torch.from_numpy(order)] = x
            x = out
        return x


#: PIL modes that are read as they are, and the mode they are read as
_NATIVE_MODES = {"1": "L", "L": "L", "RGB": "RGB"}
IMAGE_MODES = ("L", "RGB")
#: the largest side --image-size accepts
MAX_IMAGE_SIDE = 2**15


def image_extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(IMG_EXTENSIONS)


def is_image_file(path: str) -> bool:
    """An image by its extension (torchvision's ``IMG_EXTENSIONS``, any case), not a hidden file."""
    from torchvision.datasets.folder import has_file_allowed_extension

    return not os.path.basename(path).startswith(".") and has_file_allowed_extension(
        path, image_extensions()
    )


def read_image(path: str, mode: str, size: tuple[int, int]) -> torch.Tensor:
    """One image as float32 ``(C, H, W)`` in [0, 1]: converted to ``mode`` by PIL, resized to
    ``size`` (H, W) by torchvision (bilinear, antialiased) when it differs, 8-bit values / 255."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    try:
        with Image.open(path) as im:
            img = im if im.mode == mode else im.convert(mode)
            t = F.pil_to_tensor(img)
    except Exception as e:  # OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise DataError(
            f"cannot decode the image {path} ({type(e).__name__}: {one_line(e)}); the file is "
            "corrupt or truncated: replace or remove it"
        ) from None
    if tuple(t.shape[1:]) != tuple(size):
        t = F.resize(t, list(size), interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    return t.to(torch.float32).div_(255.0)


class FolderRows(RowSource):
    """Image files, decoded when their rows are read (:func:`read_image`); made by
    :func:`scan_folder`, which has checked every file's header."""

    parallel_reads = True
    chunk_rows = 64

    def __init__(
        self,
        root: Path,
        files: Sequence[str],
        mode: str,
        size: tuple[int, int],
        stats: Sequence[tuple[int, int]],
    ) -> None:
        super().__init__(len(files), (1 if mode == "L" else 3, *size))
        self.root = Path(root).resolve()
        self.files = list(files)
        self.mode = mode
        self.image_size = tuple(size)
        h = hashlib.blake2b(digest_size=16)
        for f, (nbytes, mtime) in zip(self.files, stats):
            h.update(f"{os.path.relpath(f, self.root)}|{nbytes}|{mtime}\n".encode())
        self._files_digest = h.digest()

    def describe(self) -> str:
        return f"folder {self.root}"

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        out = torch.empty((rows.shape[0], *self._x_shape), dtype=torch.float32)
        for i, r in enumerate(rows.tolist()):
            out[i] = read_image(self.files[r], self.mode, self.image_size)  # type: ignore[arg-type]
        return out

    def value_range(self, scan: bool = True) -> tuple[float, float] | None:
        return (0.0, 1.0)

    def identity(self) -> bytes:
        return (
            f"{self.root}|{len(self.files)}|mode={self.mode}|size={self.image_size}|".encode()
            + self._files_digest
        )


def image_options(image_size: Any, image_mode: Any) -> tuple[tuple[int, int] | None, str | None]:
    """``--image-size`` as (H, W) and ``--image-mode``, checked: :class:`ConfigError` if not."""
    size = None
    if image_size is not None:
        sizes = (image_size,) if isinstance(image_size, numbers.Integral) else image_size
        ok = (
            isinstance(sizes, (tuple, list))
            and len(sizes) in (1, 2)
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes)
        )
        if not ok:
            raise ConfigError(
                f"--image-size takes H W or S (for S x S) in pixels, got {image_size!r}"
            )
        if not all(1 <= s <= MAX_IMAGE_SIDE for s in sizes):
            raise ConfigError(
                f"--image-size sides must lie in 1..{MAX_IMAGE_SIDE} pixels, got "
                f"{' '.join(map(str, sizes))}"
            )
        size = (int(sizes[0]), int(sizes[-1]))
    if image_mode is not None and image_mode not in IMAGE_MODES:
        raise ConfigError(
            f"--image-mode must be L (grayscale) or RGB, got {image_mode!r}; every image is "
            "converted to it"
        )
    return size, image_mode


def _layout(root: Path) -> tuple[list[str], list[int] | None, list[str] | None]:
    """The image files under ``root`` and their labels: images directly in ``root`` (unlabelled),
    or in class subfolders named by the class (labels: the sorted names' indices, as
    ``torchvision.datasets.ImageFolder`` numbers them)."""
    if not root.exists():
        raise DataError(
            f"no such folder: {root}; --dataset folder:PATH reads the images in the folder PATH, "
            "or in its class subfolders"
        )
    if not root.is_dir():
        raise DataError(
            f"{root} is not a folder; --dataset folder:PATH reads a folder of images (give a "
            ".npy or .npz file as --dataset FILE, without folder:)"
        )
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list the folder {root}: {one_line(e)}") from None
    # not e.is_file(): a FIFO or device named like an image is listed, and refused by its type
    direct = [e.path for e in entries if not e.is_dir() and is_image_file(e.path)]
    subdirs = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    samples: list[tuple[str, int]] = []
    if subdirs:
        samples = _walk_classes(root, subdirs)
    exts = ", ".join(image_extensions())
    if direct:
        if samples:
            raise DataError(
                f"{root} holds images both directly (e.g. {direct[0]}) and in subfolders (e.g. "
                f"{samples[0][0]}); put them all in class subfolders (labelled) or all directly "
                f"in {root} (unlabelled)"
            )
        return direct, None, None
    if not samples:
        raise DataError(
            f"no images in {root}: --dataset folder:PATH reads files ending in {exts} (in any "
            "case), directly in PATH or in one subfolder per class"
        )
    found = {label for _, label in samples}
    empty = [c for i, c in enumerate(subdirs) if i not in found]
    if empty:
        raise DataError(
            f"the class folder {root / empty[0]} holds no images (empty subfolders of {root}: "
            f"{len(empty)} of {len(subdirs)}); every subfolder is a class: add images ({exts}) "
            "to it or remove it"
        )
    return [p for p, _ in samples], [label for _, label in samples], subdirs


def _walk_classes(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(image path, class index) under each class folder, in sorted order, as torchvision's
    ``make_dataset`` lists them, but a folder reached twice (a symbolic link back up the tree, or
    a link to another class's folder) is refused instead of read again: with links followed
    blindly, 50 files became 43,050 images and aliases became classes."""
    seen: dict[tuple[int, int], str] = {}

    def visit(folder: str) -> None:
        st = os.stat(folder)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise DataError(
                f"the folder {folder} is {seen[key]} again (a symbolic link loop or an alias); "
                "every image folder must be read once: remove the link"
            )
        seen[key] = folder

    visit(str(root))
    out = []
    for index, name in enumerate(classes):
        walked = []
        for folder, _, files in os.walk(str(root / name), followlinks=True):
            visit(folder)  # before going deeper: a loop ends at its first repeat
            walked.append((folder, files))
        for folder, files in sorted(walked):  # make_dataset's order
            for f in sorted(files):
                path = os.path.join(folder, f)
                if is_image_file(path):
                    out.append((path, index))
    return out


def scan_folder(
    root: Path | str, image_size: Any = None, image_mode: Any = None
) -> tuple[FolderRows, np.ndarray | None, list[str] | None]:
    """A folder of images as a :class:`FolderRows` source, with labels and class names when the
    images are in class subfolders.

    Every image's header is read up front (PIL reads the size and mode without decoding), so that a
    file that is not an image, and images of different sizes or modes without ``image_size`` or
    ``image_mode``, fail with a one-line :class:`DataError` before training starts.
    """
    from PIL import Image

    size, mode = image_options(image_size, image_mode)
    root = Path(root).expanduser()
    files, labels, classes = _layout(root)
    sizes, modes, stats = [], [], []
    for p in files:
        if not stat.S_ISREG(os.stat(p).st_mode):
            raise DataError(
                f"{p} is not a regular file (a FIFO, device or socket); image folders hold image "
                "files only: remove it"
            )
        try:
            st = os.stat(p)
            with Image.open(p) as im:
                sizes.append(im.size)  # (W, H)
                modes.append(im.mode)
        except Exception as e:  # UnidentifiedImageError, OSError, DecompressionBombError, ...
            raise DataError(
                f"cannot read the image {p} ({type(e).__name__}: {one_line(e)}); it is not an "
                "image PIL can open, or it is corrupt: replace or remove it"
            ) from None
        stats.append((st.st_size, st.st_mtime_ns))
    for p, m in zip(files, modes):
        if m.startswith(("I", "F")):
            raise DataError(
                f"{p} is a 16- or 32-bit image (PIL mode {m}); pyro-vae reads 8-bit images: "
                "convert it to 8-bit grayscale or RGB first"
            )
    if mode is None:
        for p, m in zip(files, modes):
            if m not in _NATIVE_MODES:
                raise DataError(
                    f"{p} has PIL mode {m}; pass --image-mode L (grayscale) or --image-mode RGB "
                    "to convert every image to it"
                )
        mode = _NATIVE_MODES[modes[0]]
        for p, m in zip(files, modes):
            if _NATIVE_MODES[m] != mode:
                raise DataError(
                    f"the images differ in mode: {files[0]} is {modes[0]}, {p} is {m}; pass "
                    "--image-mode L (grayscale) or --image-mode RGB to convert them all"
                )
    if size is None:
        w0, h0 = sizes[0]
        for p, (w, h) in zip(files, sizes):
            if (w, h) != (w0, h0):
                raise DataError(
                    f"the images differ in size: {files[0]} is {h0}x{w0} (H x W), {p} is {h}x{w}; "
                    f"pass --image-size H W (e.g. --image-size {h0} {w0}) to resize them all"
                )
        size = (h0, w0)
    source = FolderRows(root, files, mode, size, stats)
    return source, (None if labels is None else np.asarray(labels, dtype=np.int64)), classes


# --- the DataLoader ---


class _Failure:
    """A read error carried back from a DataLoader worker as a value: raised there, the DataLoader
    would re-raise it with the worker's traceback in its message (and our errors keep one line)."""

    def __init__(self, error: DataError) -> None:
        self.message = str(error)


class _Fetch:
    """The DataLoader's view of a source: whole batches through :meth:`RowSource.read`."""

    def __init__(self, source: RowSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, positions: Sequence[int]) -> torch.Tensor | _Failure:
        try:
            return self.source.read(np.asarray(positions, dtype=np.int64))
        except DataError as e:
            return _Failure(e)

    def __getitem__(self, position: int) -> torch.Tensor | _Failure:
        return self.__getitems__([position])


def _whole_batch(batch: Any) -> Any:
    """The collate function: a batch comes from ``__getitems__`` whole."""
    return batch


def index_arrays(index_batches: Sequence[Any]) -> list[np.ndarray]:
    """Index batches (LongTensors on any device, arrays or lists) as int64 arrays, with one copy
    from the device for all of them (and no Python int per index: an epoch of a large data set
    is many millions of them)."""
    batches = list(index_batches)
    if not batches:
        return []
    if all(isinstance(b, torch.Tensor) for b in batches):
        sizes = [int(b.numel()) for b in batches]
        flat = torch.cat([b.reshape(-1).long() for b in batches]).cpu().numpy()
        return np.split(flat, np.cumsum(sizes)[:-1])
    return [np.asarray(b, dtype=np.int64).reshape(-1) for b in batches]


def read_batches(
    source: RowSource,
    index_batches: Sequence[Any],
    device: torch.device | str,
    *,
    workers: int = 0,
    prefetch: int = 2,
    dtype: torch.dtype | None = None,
) -> Iterator[torch.Tensor]:
    """The rows of each index batch of ``source`` in turn, on ``device``.

    A :class:`~torch.utils.data.DataLoader` reads them: ``workers`` processes (0: in this process),
    ``prefetch`` batches ahead per worker, into pinned memory when ``device`` is CUDA, copied to the
    device without blocking. A :class:`DataError` in a worker is raised here, with its message.
    The global random state is left alone, so streaming draws the same random numbers as indexing a
    tensor.
    """
    from torch.utils.data import DataLoader

    device = torch.device(device)
    batches = index_arrays(index_batches)
    if not batches:
        return
    cuda = device.type == "cuda"
    loader = DataLoader(
        _Fetch(source),  # type: ignore[arg-type]
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_whole_batch,
        pin_memory=cuda,
        prefetch_factor=prefetch if workers > 0 else None,
        # its own generator: the DataLoader draws a base seed for its workers from it, which would
        # otherwise come from the global RNG and shift the run's random numbers
        generator=torch.Generator().manual_seed(0),
        # a worker dies with this process however it stops (kill -9 included)
        worker_init_fn=die_with_parent if workers > 0 else None,
    )
    with stops_deferred():  # the workers are forked here
        batches_read = iter(loader)
    for x in batches_read:
        if isinstance(x, _Failure):
            raise DataError(x.message)
        yield x.to(device=device, dtype=dtype, non_blocking=cuda)
