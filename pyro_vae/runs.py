"""A trained run on disk: its model rebuilt from the run directory alone, its data only on demand.

A run needs its data to train, not to serve. The checkpoint records the data's shape and number of
classes (``data_spec``), which is all a model needs to be rebuilt, so sampling, encoding or scoring
new data works with the training data moved or deleted. The run's own data are loaded, and checked
against the fingerprint saved with the run, only when something reads them (:class:`RunData`):
``--resume`` and ``evaluate`` on the run's own test split, where other data would give a wrong
result.

This module imports no data set, plotting library or training engine: the serving commands load
through it and should start as fast as ``import torch, pyro``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .boundary import check_run_dir_argument
from .build import read_checkpoint
from .checkpoint import CHECKPOINT, load_model_state
from .errors import CheckpointError, ConfigError, DataError
from .inventory import check_model_memory, user_parts
from .usercode import note_parts, parts_boundary

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import Dataset

MODEL_TEXT = "model.txt"


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"--device {name}: pyro-vae trains on cpu or cuda (cuda:N), not {device.type}"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name} asks for CUDA, but this machine has no usable GPU; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    return device


def data_spec(data: Dataset, from_python: bool) -> dict[str, Any]:
    """What a run records about its data so that its model can be rebuilt without them: the shape
    of one datum, the number of classes, and (for the model card and error messages) the data set's
    name, binarization, split sizes and whether it was passed in Python."""
    return {
        "shape": [int(d) for d in data.x_shape],
        "num_classes": None if data.num_classes is None else int(data.num_classes),
        "name": str(data.name),
        "binarize": str(data.binarize),
        "train_size": int(data.train.shape[0]),
        "test_size": int(data.test.shape[0]),
        "from_python": bool(from_python),
    }


def _checked_spec(spec: Any, path: Path) -> dict[str, Any] | None:
    if spec is None:
        return None
    shape = spec.get("shape") if isinstance(spec, dict) else None
    classes = spec.get("num_classes") if isinstance(spec, dict) else None
    if (
        not isinstance(spec, dict)
        or "num_classes" not in spec  # None (no labels) is a value; a missing entry is damage
        or not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and d > 0 for d in shape)
        or not (classes is None or (isinstance(classes, int) and classes > 0))
        or not all(isinstance(spec.get(k, ""), str) for k in ("name", "binarize"))
        or not all(
            isinstance(spec.get(k, 0), int) and spec.get(k, 0) >= 0
            for k in ("train_size", "test_size")
        )
        or not isinstance(spec.get("from_python", False), bool)
    ):
        raise CheckpointError(
            f"{path} is damaged: its data_spec entry is not what pyro-vae writes (a data shape, a "
            "class count, the data's name and sizes); restore it from a backup"
        )
    return spec


class RunData:
    """The data a run was trained on, loaded when first read and checked against the run's saved
    fingerprint; reads like the :class:`~pyro_vae.data.Dataset` it stands for (``data.test``,
    ``data.x_shape``, ...).

    Where the data cannot be loaded (the file moved or was deleted, or they were passed in Python),
    reading them raises a one-line :class:`~pyro_vae.errors.DataError` that says what to pass
    instead; everything that needs only the model works regardless.
    """

    def __init__(
        self, run_dir: Path, config: RunConfig, checkpoint: dict[str, Any], device: torch.device
    ) -> None:
        self._run_dir = Path(run_dir)
        self._config = config
        self._fingerprint = checkpoint.get("data_fingerprint")
        self._spec = _checked_spec(checkpoint.get("data_spec"), self._run_dir / CHECKPOINT) or {}
        self._device = device
        self._loaded: Dataset | None = None

    def load(self) -> Dataset:
        """The run's data set on the run's device; raises :class:`DataError` if it is not there or
        has changed since the run was trained."""
        if self._loaded is None:
            from .data import fingerprint, load_dataset

            where = f"the run in {self._run_dir}"
            if self._spec.get("from_python"):
                raise DataError(
                    f"{where} was trained on a data set passed in Python "
                    f"({self._spec.get('name')!r}), so it cannot load them itself: pass them with "
                    "pyro_vae.load_run(RUN, dataset=...), or other data with --data"
                )
            from .data import received_data_dir

            # a folder a received run names that is not here is never created nor downloaded into
            data_dir = received_data_dir(self._config.data)
            try:
                data = load_dataset(dataclasses.replace(self._config.data, data_dir=data_dir))
            except (DataError, ConfigError, OSError) as e:
                raise DataError(
                    f"{where} needs its training data {self._config.data.dataset!r} here, and they "
                    f"cannot be loaded ({e}); pass other data with --data FILE (or dataset= in "
                    "Python), or restore them"
                ) from None
            if self._fingerprint is not None and fingerprint(data) != self._fingerprint:
                raise DataError(
                    f"the data differ from those {where} was trained on (config.json's data set "
                    f"{self._config.data.dataset!r} changed on disk); restore them, or pass the "
                    "run's data with dataset= or other data with --data"
                )
            self._loaded = data.to(self._device)
        return self._loaded

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.load(), name)

    def __repr__(self) -> str:
        state = "loaded" if self._loaded is not None else "not loaded yet"
        return f"RunData({self._config.data.dataset!r}, {state})"


def load_model(
    run_dir: str | Path, device: str = "cpu", *, model: nn.Module | None = None
) -> tuple[RunConfig, nn.Module, dict[str, Any]]:
    """A trained run's configuration, its model (on ``device``, in eval mode) and its checkpoint,
    from the run directory alone: no data are read (except for a run written before the checkpoint
    recorded its data's shape, whose data are loaded and checked once to learn it).

    A run trained with a model object is rebuilt from the model's description (its class must be
    importable here), or reloaded into ``model``, a fresh object of the same architecture.
    """
    run_dir = check_run_dir_argument(run_dir)
    ckpt = read_checkpoint(run_dir / CHECKPOINT)
    config: RunConfig = ckpt["config"]
    parts = user_parts(config, model)
    note_parts(parts)
    with parts_boundary(parts, "loading the run"):
        return _load_model(run_dir, ckpt, config, device, model)


def _load_model(
    run_dir: Path, ckpt: dict[str, Any], config: RunConfig, device: str, model: nn.Module | None
) -> tuple[RunConfig, nn.Module, dict[str, Any]]:
    import pyro

    from .models import build_model
    from .models.base import as_model
    from .runspec import DESCRIPTION_KEY, rebuild_model

    dev = resolve_device(device)
    pyro.set_rng_seed(config.train.seed)
    if model is None and DESCRIPTION_KEY in ckpt:
        model = rebuild_model(ckpt[DESCRIPTION_KEY], run_dir)
    if model is None and config.model.model.startswith("custom:"):
        raise CheckpointError(
            f"the run in {run_dir} trained a model passed as an object "
            f"({config.model.model[7:]}, see {MODEL_TEXT}); rebuild it and reload with "
            "pyro_vae.load_run(RUN, model=...)"
        )
    given = model
    if model is None:
        spec = _checked_spec(ckpt.get("data_spec"), run_dir / CHECKPOINT)
        if spec is None:  # a checkpoint older than data_spec: its data say what shape to build
            data = RunData(run_dir, config, ckpt, torch.device("cpu")).load()
            spec = {"shape": list(data.x_shape), "num_classes": data.num_classes}
        check_model_memory(config.model, spec["shape"], spec["num_classes"], dev, training=False)
        model = build_model(config.model, spec["shape"], spec["num_classes"])
    else:
        model = as_model(model)  # a plain model/guide pair is wrapped into a Model, once
    # a plan's selected epoch (M2's best validation accuracy) is the run's model; else the last epoch
    selected = ckpt.get("plan", {}).get("selected_model", ckpt["model"])
    load_model_state(model, selected, run_dir / CHECKPOINT)
    model.to(dev).eval()
    return config, given if given is not None else model, ckpt


def load_run(
    run_dir: str | Path,
    device: str = "cpu",
    *,
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
) -> tuple[RunConfig, nn.Module, Dataset | RunData]:
    """Rebuild a trained run's model from its directory, with its data set.

    The model needs nothing but the run directory. The data are returned as a :class:`RunData`
    that loads them when first read, checked against what the run saved, so a run whose data moved
    still samples, encodes and scores new data. A run trained with a model object
    (``config.json`` names it ``"custom:..."``) is reloaded into ``model``, a fresh object of the
    same architecture; a run trained on data passed in Python gets them back through ``dataset``,
    which is checked at once.
    """
    config, model, ckpt = load_model(run_dir, device, model=model)
    if dataset is None:
        return config, model, RunData(Path(run_dir), config, ckpt, resolve_device(device))
    from .data import fingerprint

    saved = ckpt.get("data_fingerprint")
    if saved is not None and fingerprint(dataset) != saved:
        raise CheckpointError(
            f"the data differ from those the run in {run_dir} was trained on; pass the data set "
            "the run was trained on"
        )
    return config, model, dataset.to(resolve_device(device))
