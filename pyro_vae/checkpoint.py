"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers and strings; loading one never runs code from it.
"""

from __future__ import annotations

import os
import tempfile
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


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A crash at any point leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    try:
        payload["config"] = RunConfig.from_json(payload["config"])
    except (ConfigError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path} holds a configuration this pyro-vae cannot read: {e}"
        ) from None
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
