"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers and strings; loading one never runs code from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import CheckpointError, ConfigError

FORMAT = "pyro-vae-checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


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


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


@contextlib.contextmanager
def run_directory(run_dir: Path, *, create: bool = True) -> Iterator[Path]:
    """Own ``run_dir`` for the duration: one process at a time, temporary files of killed writers
    removed.

    The lock is an advisory ``flock`` on ``run_dir/.lock`` holding the owner's pid; the kernel drops
    it when the owner exits, however it exits (kill -9 included), so a stale lock never blocks.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir} is a file, not a directory; choose another path")
    if not run_dir.exists():
        if not create:
            raise CheckpointError(f"no run directory at {run_dir}")
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the run directory {run_dir}: {e.strerror}") from None
    try:
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ConfigError(
            f"cannot write in the run directory {run_dir} ({e.strerror}); make it writable or "
            "choose another --run-dir"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"{run_dir} is in use by another pyro-vae process (pid {owner}); wait for it to "
                "finish, or choose another --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        for tmp in run_dir.glob(".*.tmp"):  # left by a writer killed mid-write (atomic_write_bytes)
            if tmp.name.startswith((f".{CHECKPOINT}.", f".{CONFIG}.", f".{METRICS}.")):
                tmp.unlink(missing_ok=True)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def non_finite(state: Mapping[str, Any], prefix: str = "") -> str | None:
    """The name of the first tensor or number in a (nested) state that is NaN or infinite."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found = non_finite(value, f"{name}.")
            if found is not None:
                return found
        elif isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return name
        elif isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def save_checkpoint(path: Path, config: RunConfig, epoch: int, **state: Any) -> None:
    payload = {"format": FORMAT, "version": VERSION, "config": config.to_json(), "epoch": epoch}
    payload.update(state)
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: train a run there first (pyro-vae train --run-dir ...)"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read the checkpoint {path}: it is corrupt or not a pyro-vae checkpoint "
            f"({type(e).__name__}). Restore it from a backup, or retrain without --resume"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} was written by checkpoint format {payload.get('version')}, this pyro-vae reads "
            f"format {VERSION}; use the pyro-vae version that wrote it"
        )
    required = {"config": str, "epoch": int, "model": dict}
    for key, kind in required.items():
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(
                f"{path} is damaged: its {key!r} entry is missing or not a {kind.__name__}; "
                "restore it from a backup, or retrain without --resume"
            )
    if not all(isinstance(v, torch.Tensor) for v in payload["model"].values()):
        raise CheckpointError(f"{path} is damaged: its model state holds non-tensors")
    try:
        payload["config"] = RunConfig.from_json(payload["config"])
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path} holds a configuration this pyro-vae cannot read: {e}"
        ) from None
    bad = non_finite({k: payload.get(k, {}) for k in ("model", "optim", "plan")})
    if bad is not None:
        raise CheckpointError(
            f"{path} holds a non-finite value ({bad}), so it cannot be a good state; it was not "
            "written by this pyro-vae, which never saves one. Retrain without --resume"
        )
    return payload


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"the checkpoint {path} does not fit this model ({first[1].strip() if len(first) > 1 else first[0]}); "
            "it was written for a different configuration"
        ) from None
