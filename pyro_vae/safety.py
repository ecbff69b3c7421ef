"""Safe file handling for run directories that may come from someone else, and resource limits.

A run directory is data: it may have been written by another person, copied from a bundle, or
tampered with. Nothing pyro-vae writes there may land outside it, whatever links it holds:

* :func:`run_path` names a file inside a run directory; it refuses a symbolic link at the file or at
  any folder between the run directory and the file (and creates the missing folders there);
* whole files are written by :func:`atomic_write_bytes`: a temporary file beside the target, renamed
  over it (``rename`` replaces a link itself, it never writes through one), so a crash or a full disk
  leaves the old file, never a torn or empty one;
* files that grow (``metrics.jsonl``, the CSV log) and the lock are opened with ``O_NOFOLLOW``
  (:func:`open_append`, :func:`open_lock`);
* files that are read must be regular files (:func:`regular_file`): a FIFO would block forever.

Sizes that become allocations (images, samples, network weights) are checked against the memory of
the machine before anything is allocated (:func:`check_allocation`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import CheckpointError, DataError, TooLarge, UnsafePath, WriteFailed

__all__ = ["TooLarge", "UnsafePath", "WriteFailed"]


# -- paths inside a run directory --------------------------------------------------------------------
def run_path(run_dir: str | Path, *parts: str, mkdir: bool = True) -> Path:
    """``run_dir/parts...``, refused (:class:`UnsafePath`) if the file or a folder below ``run_dir``
    on the way to it is a symbolic link; the folders are created (``mkdir``) inside ``run_dir``.

    ``run_dir`` itself may be a link: the user named it. What is below it came with the run.
    """
    root = Path(run_dir)
    path = root
    for i, part in enumerate(parts):
        path = path / part
        last = i == len(parts) - 1
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if not last and mkdir:
                try:
                    os.mkdir(path)
                except FileExistsError:  # made meanwhile, or a dangling link: check again
                    st = os.lstat(path)
                    _refuse_link(path, st, root)
                except OSError as e:
                    raise WriteFailed(f"cannot create the folder {path}: {e.strerror}") from None
            continue
        except NotADirectoryError:
            raise UnsafePath(
                f"{path.parent} is a file, not a folder; the run directory {root} is damaged"
            ) from None
        _refuse_link(path, st, root)
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafePath(
                f"{path} is a file, not a folder; the run directory {root} is damaged: remove it"
            )
    return path


def run_folder(run_dir: str | Path, *parts: str) -> Path:
    """The folder ``run_dir/parts...``, created inside ``run_dir``; refused (:class:`UnsafePath`)
    if it or a folder on the way is a symbolic link (see :func:`run_path`)."""
    folder = run_path(run_dir, *parts)
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not folder.is_dir():
            raise UnsafePath(
                f"{folder} is a file, not a folder; the run directory {run_dir} is damaged: "
                "remove it"
            ) from None
    except OSError as e:
        raise WriteFailed(f"cannot create the folder {folder}: {e.strerror}") from None
    return folder


def _refuse_link(path: Path, st: os.stat_result, root: Path) -> None:
    if stat.S_ISLNK(st.st_mode):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise UnsafePath(
            f"{path} is a symbolic link (to {target}); pyro-vae never writes through a link in a "
            f"run directory, which may come from someone else: remove the link from {root}"
        )


def regular_file(path: str | Path, what: str = "file", error: type = DataError) -> Path:
    """``path`` if it is a regular file (links followed); a FIFO, device or socket would block or
    never end when read, so it is refused with ``error``."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"no {what} at {path}") from None
    except OSError as e:
        raise error(f"cannot read the {what} {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"the {what} {path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise error(
            f"the {what} {path} is {kind}; pyro-vae reads regular files only: copy the data into "
            "a file"
        )
    return path


# -- writing ----------------------------------------------------------------------------------------
def umask() -> int:
    """This process's umask, read without changing it where Linux reports it."""
    try:  # Linux >= 4.7
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file in this process: ``0o666`` less the umask.

    ``tempfile.mkstemp`` creates its file ``0o600`` whatever the umask; a file renamed into place
    gets this mode instead, so that a run or bundle on a shared file system is readable by whom the
    user's umask allows, as every other file they write.
    """
    return 0o666 & ~umask()


def write_error(path: str | Path, e: OSError) -> WriteFailed:
    """One line for a failed write: the file and the system's reason (``No space left on
    device``), and that the previous file was kept."""
    reason = e.strerror or str(e) or type(e).__name__
    hint = ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "; free some space and run the command again"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "; make the folder writable or choose another"
    return WriteFailed(f"cannot write {path}: {reason} (the file as it was before is kept){hint}")


def atomic_write_bytes(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over
    ``path``.

    A crash or a full disk at any point leaves either the old file or the new one, never a torn or
    empty one; a link at ``path`` is replaced, never written through. An ``OSError`` becomes
    :class:`WriteFailed` (one line naming the file and the reason).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_save(path: str | Path, save: Callable[[str], Any]) -> Path:
    """``save(tmp)`` for a writer that takes a file name (``fig.savefig``), then renamed over
    ``path`` (same suffix, so the writer picks the same format)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        os.fchmod(fd, file_mode())
        os.close(fd)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise write_error(path, e) from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def open_append(path: str | Path, newline: str | None = None) -> IO[str]:
    """``path`` opened for appending text, without following a link at it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(
                f"{path} is a symbolic link; pyro-vae never writes through a link in a run "
                "directory: remove it"
            ) from None
        raise write_error(path, e) from None
    return os.fdopen(fd, "a", newline=newline)


def append_text(path: str | Path, text: str) -> None:
    """Append ``text`` to ``path`` (no link followed); a failed write is one line."""
    try:
        with open_append(path) as f:
            f.write(text)
            f.flush()
    except OSError as e:
        raise write_error(path, e) from None


def open_lock(path: str | Path) -> int:
    """A file descriptor of the lock file ``path``, opened read-write without following a link."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(
                f"{path} is a symbolic link; pyro-vae never writes through a link in a run "
                f"directory, which may come from someone else: remove it"
            ) from None
        raise


def read_text(path: str | Path, what: str, error: type = CheckpointError) -> str:
    """The text of a regular file, or a one-line ``error`` (binary content included)."""
    regular_file(path, what, error)
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not a text file ({what}); the run directory is damaged") from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror}") from None


# -- memory ------------------------------------------------------------------------------------------
def _size(nbytes: float) -> str:
    value, unit = float(nbytes), "bytes"
    for u in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024:
            break
        value, unit = value / 1024, u
    return f"{value:.1f} {unit}" if unit != "bytes" else f"{int(value)} bytes"


def memory_limit(device: Any = "cpu") -> int:
    """The memory a single allocation may take on ``device``: the GPU's total memory, or the
    host's physical memory (``PYRO_VAE_MEMORY_LIMIT`` bytes overrides it, for tests)."""
    override = os.environ.get("PYRO_VAE_MEMORY_LIMIT")
    if override:
        return int(override)
    import torch

    device = torch.device(device) if not isinstance(device, torch.device) else device
    if device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_allocation(nbytes: float, what: str, hint: str = "", device: Any = "cpu") -> None:
    """Refuse (:class:`TooLarge`, with the size) an allocation of ``nbytes`` bytes that could not fit
    in the memory of ``device``, before it is attempted."""
    limit = memory_limit(device)
    if nbytes > limit:
        raise TooLarge(
            f"{what} would take {_size(nbytes)}, more than the {_size(limit)} of memory here"
            + (f"; {hint}" if hint else "")
        )


# -- results ------------------------------------------------------------------------------------------
def finite_result(name: str, value: Any) -> Any:
    """``value`` (a number, tensor or array) if every entry is finite, else a one-line
    :class:`DataError`: a loaded model that gives NaN or infinite values (weights that overflow,
    a damaged or diverged run) has no number to report."""
    import numpy as np
    import torch

    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(
            f"{name} is not finite (NaN or infinite) for these data: the model's weights overflow "
            "or the run diverged, so there is no number to report; retrain it"
        )
    return value


# -- worker processes --------------------------------------------------------------------------------
@contextlib.contextmanager
def stops_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT held back (delivered when the block ends) while worker processes are
    forked: a stop that lands inside Python's at-fork hooks is swallowed there and leaves the
    logging module's lock held, so that the next fork hangs for ever."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = {signal.SIGTERM, signal.SIGINT}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _quiet(*_: Any) -> None:
    pass


def die_with_parent(*_: Any) -> None:
    """In a child process: be killed (SIGKILL) when the parent dies, however it dies (kill -9
    included), so that no DataLoader worker outlives the run. Linux only; elsewhere a no-op (the
    workers' own watchdog still ends them, later)."""
    import ctypes
    import signal
    import sys

    # a forked worker inherits the parent's stop handlers and blocked signals: its own are the
    # defaults (the DataLoader ends it through its queues, or its parent's death through the kernel)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    # the worker's errors reach the parent through the DataLoader; what its helper threads report
    # when the parent is gone mid-transfer (multiprocessing's resource sharer: ECONNRESET) would
    # print tracebacks under the parent's one-line stop message
    sys.excepthook = _quiet
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    # the parent may have died before prctl: then this process was reparented already
    if os.getppid() == 1:
        os._exit(0)
