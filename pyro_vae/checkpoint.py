"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers and strings; loading one never runs code from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig
from .errors import CheckpointError, ConfigError
from .safety import (
    atomic_write_bytes,
    atomic_write_text,
    file_mode,
    open_lock,
    regular_file,
    umask,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "file_mode",
    "load_checkpoint",
    "save_checkpoint",
    "umask",
]

FORMAT = "pyro-vae-checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.jsonl"
LOCK = ".lock"


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
        fd = open_lock(run_dir / LOCK)
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
    # serialised in memory first: torch.save's own file writer turns a full disk into an opaque
    # RuntimeError, a plain write gives the OSError (ENOSPC) that names the cause
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(
    path: Path,
    map_location: str | torch.device = "cpu",
    *,
    check_config: Callable[[RunConfig, Path], RunConfig] | None = None,
) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file or a run directory), its structure checked entry by entry.

    ``check_config`` checks the configuration inside before anything is read against it (the build
    layer passes its validation: :func:`pyro_vae.build.read_checkpoint`)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}: train a run there first (pyro-vae train --run-dir ...)"
        )
    regular_file(path, "checkpoint", CheckpointError)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"cannot read the checkpoint {path}: it is corrupt or not a pyro-vae checkpoint "
            f"({type(e).__name__}). Restore it from a backup, or retrain without --resume"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pyro-vae checkpoint (no 'format' entry naming {FORMAT!r})"
        )
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"{path} was written by checkpoint format {payload.get('version')}, this pyro-vae reads "
            f"format {VERSION}; use the pyro-vae version that wrote it"
        )
    check_structure(payload, path)
    try:
        payload["config"] = RunConfig.from_json(payload["config"])
    except (ConfigError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{path} holds a configuration this pyro-vae cannot read: {e}"
        ) from None
    if check_config is not None:
        payload["config"] = check_config(payload["config"], path)
    check_progress(payload, path)
    bad = non_finite({k: payload.get(k, {}) for k in ("model", "optim", "plan")})
    if bad is not None:
        raise CheckpointError(
            f"{path} holds a non-finite value ({bad}), so it cannot be a good state; it was not "
            "written by this pyro-vae, which never saves one. Retrain without --resume"
        )
    return payload


def _damaged(path: Path, entry: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path.name}: {entry!r} {what}: the file is damaged or not from pyro-vae ({path}); "
        "restore it from a backup, or retrain without --resume"
    )


def _a(value: Any) -> str:
    """``a list``, ``an int``: the type of a value found in a checkpoint, for messages."""
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _tensor_dict(value: Any, path: Path, entry: str, required: bool = True) -> None:
    if not isinstance(value, dict):
        what = "is missing" if value is None and required else f"is {_a(value)}"
        raise _damaged(path, entry, f"{what}, not a dict of tensors")
    for key, t in value.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise _damaged(path, f"{entry}.{key}", f"is {_a(t)}, not a tensor")


def _rng_entry(value: Any, path: Path, entry: str) -> None:
    """A random state as ``train._rng_state`` saves it: ``cpu`` (and ``cuda``) byte tensors of the
    size torch's generators use."""
    if not isinstance(value, dict):
        raise _damaged(path, entry, f"is {_a(value)}, not a dict of random states")
    size = torch.get_rng_state().numel()
    cpu = value.get("cpu")
    if not isinstance(cpu, torch.Tensor):
        raise _damaged(path, f"{entry}.cpu", "is missing or not a tensor")
    if cpu.dtype != torch.uint8 or cpu.shape != (size,):
        raise _damaged(
            path,
            f"{entry}.cpu",
            f"is a {cpu.dtype} tensor of shape {tuple(cpu.shape)}, "
            f"not the ({size},) byte tensor of a random state",
        )
    cuda = value.get("cuda")
    if cuda is not None and (not isinstance(cuda, torch.Tensor) or cuda.dtype != torch.uint8):
        raise _damaged(path, f"{entry}.cuda", "is not a byte tensor")


#: the entries of a checkpoint and their types; entries marked optional are absent from
#: checkpoints of earlier versions
ENTRIES: dict[str, tuple[type, bool]] = {
    "config": (str, True),
    "epoch": (int, True),
    "model": (dict, True),
    "optim": (dict, True),
    "rng": (dict, True),
    "plan": (dict, True),
    "feed": (dict, False),
    "data_fingerprint": (str, False),
}


def check_structure(payload: dict[str, Any], path: Path) -> None:
    """Every entry of a loaded checkpoint present (where required) and of its type, down to the
    tensors; a one-line :class:`CheckpointError` naming the first entry that is not."""
    for entry, (kind, required) in ENTRIES.items():
        value = payload.get(entry)
        if value is None:
            if required:
                raise _damaged(path, entry, "is missing")
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise _damaged(path, entry, f"is {_a(value)}, not {_a(kind())}")
    _tensor_dict(payload["model"], path, "model")
    if not payload["model"]:
        raise _damaged(path, "model", "is empty")
    for name, state in payload["optim"].items():  # one Adam state per parameter name
        if not isinstance(name, str) or not isinstance(state, dict):
            raise _damaged(path, f"optim.{name}", "is not an optimiser state (a dict)")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise _damaged(path, f"optim.{name}.{key}", f"is {_a(value)}")
    rng = payload["rng"]
    _rng_entry(rng, path, "rng")
    ranks = rng.get("ranks")
    if ranks is not None:
        if not isinstance(ranks, list) or not ranks:
            raise _damaged(path, "rng.ranks", "is not a list of random states")
        for i, r in enumerate(ranks):
            _rng_entry(r, path, f"rng.ranks[{i}]")
    plan = payload["plan"]
    if not all(isinstance(k, str) for k in plan):
        raise _damaged(path, "plan", "has keys that are not names")
    if "selected_model" in plan:
        _tensor_dict(plan["selected_model"], path, "plan.selected_model")
    feed = payload.get("feed")
    if feed is not None:
        generator = feed.get("generator")
        size = torch.Generator().get_state().numel()
        if (
            not isinstance(generator, torch.Tensor)
            or generator.dtype != torch.uint8
            or generator.shape != (size,)
        ):
            raise _damaged(path, "feed.generator", "is missing or not a random state")


def check_progress(payload: dict[str, Any], path: Path) -> None:
    """The epoch counter within the run's configured epochs, and one random state per process of
    a data-parallel run."""
    config: RunConfig = payload["config"]
    epoch = payload["epoch"]
    if not 0 <= epoch <= config.train.epochs:
        raise _damaged(
            path, "epoch", f"is {epoch}, outside 0..{config.train.epochs} (the run's --epochs)"
        )
    ranks = payload["rng"].get("ranks")
    world = config.train.devices * config.train.num_nodes
    if ranks is not None and len(ranks) != world:
        raise _damaged(
            path, "rng.ranks", f"holds {len(ranks)} random states for a run of {world} processes"
        )


def check_optim_fits(optim: dict[str, Any], model: torch.nn.Module, path: Path) -> None:
    """Each saved Adam state (names saved relative to the model as ``{model}NAME``) has the entries
    Adam reads, a one-number ``step`` and moments of its parameter's shape; a mismatch would fail in
    the first step instead of here."""
    params = dict(model.named_parameters())
    for name, state in optim.items():
        param = params.get(name[len("{model}") :]) if name.startswith("{model}") else None
        if param is None:
            continue
        for key in ADAM_STATE:
            value = state.get(key)
            entry = f"optim.{name}.{key}"
            if not isinstance(value, torch.Tensor):
                raise _damaged(path, entry, "is missing or not a tensor")
            if not value.is_floating_point():
                raise _damaged(path, entry, f"is a {value.dtype} tensor, not a float one")
            want = () if key == "step" else tuple(param.shape)
            if tuple(value.shape) != want:
                raise _damaged(path, entry, f"has shape {tuple(value.shape)}, not {want}")
            if key == "step" and not float(value) >= 0:
                raise _damaged(path, entry, f"is {float(value)}, not a count of steps")


#: the state Adam keeps per parameter (pyro_vae.optim.adam)
ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(
            f"the checkpoint {path} does not fit this model ({first[1].strip() if len(first) > 1 else first[0]}); "
            "it was written for a different configuration"
        ) from None
