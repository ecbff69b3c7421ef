"""The Python API's boundary: arguments checked as the CLI checks them, one-line errors.

Every public function that takes data, a run directory or a configuration checks it here first, so
that a wrong type, dtype, shape or an empty batch is a :class:`~pyro_vae.errors.PyroVAEError` that
names the argument, never an exception from deep inside torch. The rules:

* data are a ``torch.Tensor`` or a NumPy array (converted with ``torch.as_tensor``); lists and
  other objects are refused;
* floating data of another precision (float64, float16, bfloat16) are converted to the dtype the
  model computes in (its parameters': float32 for pyro-vae's models); integer and boolean data are
  converted to it *without rescaling* (0/1 data stay 0/1; 8-bit pixels 0..255 fall outside [0, 1] and are refused by a
  Bernoulli model: divide by 255 first);
* data have the model's shape: ``(N, *x_shape)`` with ``N >= 1``; a single datum or flattened rows
  are refused with the shape to reshape to;
* values are finite and, for a pyro-vae model, inside its likelihood's support.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, DataError


def check_run_dir_argument(run_dir: Any, what: str = "run_dir") -> Path:
    """A run directory argument: a ``str`` or ``os.PathLike`` naming an existing folder."""
    if (
        run_dir is None
        or not isinstance(run_dir, str | Path)
        and not hasattr(run_dir, "__fspath__")
    ):
        raise ConfigError(
            f"{what} must be the path of a run directory (str or pathlib.Path), got "
            f"{type(run_dir).__name__}"
        )
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"no run directory at {path}")
    return path


def _x_shape(model: Any) -> tuple[int, ...] | None:
    """The data shape a model declares (``x_shape``: every pyro-vae model, and any model/guide
    object that says so), else None: unknown, not checked."""
    shape = getattr(model, "x_shape", None)
    if isinstance(shape, tuple | list | torch.Size) and all(isinstance(s, int) for s in shape):
        return tuple(shape)
    return None


def _parameter_dtype(model: Any) -> torch.dtype:
    """The floating dtype the model computes in: its parameters' (float32 for pyro-vae's)."""
    params = model.parameters() if isinstance(model, torch.nn.Module) else ()
    param = next((p for p in params if p.is_floating_point()), None)
    return param.dtype if param is not None else torch.float32


def as_data(model: Any, x: Any, caller: str, name: str = "x") -> torch.Tensor:
    """``x`` as float32 data of ``model``'s shape, on the device it came on (the rules in this
    module's docstring), or a one-line :class:`DataError` naming ``caller`` and the argument.
    ``model`` is a :class:`~pyro_vae.Model` (a plain model/guide pair wrapped by ``as_model``)."""
    where = f"{caller}: {name}"
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where} is a NumPy array of dtype {x.dtype}; pass numbers")
        x = torch.as_tensor(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise DataError(
            f"{where} must be a torch.Tensor or a NumPy array of shape (N, ...), got "
            f"{type(x).__name__}"
        )
    if x.is_complex():
        raise DataError(f"{where} is complex ({x.dtype}); pass real numbers")
    dtype = _parameter_dtype(model)
    if x.dtype != dtype:
        x = x.to(dtype)  # the stated rule: the model's float dtype, integers not rescaled
    shape = _x_shape(model)
    if x.dim() == 0:
        raise DataError(f"{where} is a scalar; pass a batch of shape (N, ...)")
    if shape is not None and tuple(x.shape) == shape:
        raise DataError(
            f"{where} has shape {tuple(x.shape)}, one datum; pass a batch of shape "
            f"(N, {', '.join(map(str, shape))}), e.g. x.unsqueeze(0)"
        )
    if shape is not None and tuple(x.shape[1:]) != shape:
        fix = ""
        if x.dim() >= 1 and x[0].numel() == math.prod(shape) and x.shape[0]:
            fix = f"; reshape it: x.reshape(-1, {', '.join(map(str, shape))})"
        raise DataError(
            f"{where} has shape {tuple(x.shape)}, but the model takes data of shape "
            f"(N, {', '.join(map(str, shape))}){fix}"
        )
    if x.shape[0] == 0 or x.numel() == 0:
        raise DataError(f"{where} is empty (shape {tuple(x.shape)}); pass at least one datum")
    if not bool(torch.isfinite(x).all()):
        raise DataError(f"{where} contains NaN or infinite values; clean or impute them first")
    model.check_data(x)  # the likelihood's support (e.g. [0, 1] for Bernoulli)
    return x


def check_count(value: Any, name: str, low: int = 1) -> int:
    """A whole-number argument at least ``low`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


# -- pyro_vae.train's arguments ----------------------------------------------------------------------
def check_train_arguments(
    config: Any, run_dir: Any, resume: Any, progress: Any, dataset: Any, model: Any
) -> Any:
    """The :func:`pyro_vae.train` arguments checked: returns the configuration (a dict, as in
    ``config.json``, is read with :meth:`RunConfig.from_dict`)."""
    from .config import RunConfig
    from .data import Dataset

    if isinstance(config, dict):
        config = RunConfig.from_dict(config)
    if not isinstance(config, RunConfig):
        raise ConfigError(
            f"train: config must be a pyro_vae.RunConfig (or a dict of its sections), got "
            f"{type(config).__name__}"
        )
    if run_dir is not None and not isinstance(run_dir, str | os.PathLike):
        raise ConfigError(
            f"train: run_dir must be a path (str or pathlib.Path) or None, got "
            f"{type(run_dir).__name__}"
        )
    if not isinstance(resume, bool):  # (progress is a mode: pyro_vae.progress checks it)
        raise ConfigError(f"train: resume must be True or False, got {resume!r}")
    if dataset is not None and not isinstance(dataset, Dataset):
        raise DataError(
            f"train: dataset must be a pyro_vae.Dataset (e.g. Dataset(name, train_x, test_x)) or "
            f"None, got {type(dataset).__name__}; a data set by name goes in config.data.dataset"
        )
    if model is not None and not isinstance(model, torch.nn.Module):
        raise ConfigError(
            f"train: model must be a torch.nn.Module with model(x) and guide(x) methods, or None, "
            f"got {type(model).__name__}; a registered model by name goes in config.model.model"
        )
    if model is not None:
        for method in ("model", "guide"):
            if not callable(getattr(type(model), method, None)):
                raise ConfigError(
                    f"train: the model {type(model).__name__} has no {method}(x) method; a model "
                    "passed in is a Pyro model/guide pair"
                )
    return config


def check_fast_on(fast: str, device: Any) -> None:
    """``--fast reduce-overhead`` compiles with CUDA graphs: refused on any other device rather than
    silently compiled without them."""
    if fast == "reduce-overhead" and torch.device(device).type != "cuda":
        raise ConfigError(
            f"--fast reduce-overhead uses CUDA graphs, which need a GPU, but this run trains on "
            f"{torch.device(device).type}; use --fast compile (or eager) on the CPU"
        )
