"""The Python API's boundary: arguments checked as the CLI checks them, one-line errors.

Every public function that takes data, a run directory or a configuration checks it here first, so
that a wrong type, dtype, shape or an empty batch is a :class:`~pyro_vae.errors.PyroVAEError` that
names the argument, never an exception from deep inside torch. The rules:

* data are a ``torch.Tensor`` or a NumPy array (converted with ``torch.as_tensor``); lists and
  other objects are refused;
* floating data of another precision (float64, float16, bfloat16) are converted to float32, the
  dtype the models compute in; integer and boolean data are converted to float32 *without
  rescaling* (0/1 data stay 0/1; 8-bit pixels 0..255 fall outside [0, 1] and are refused by a
  Bernoulli model: divide by 255 first);
* data have the model's shape: ``(N, *x_shape)`` with ``N >= 1``; a single datum or flattened rows
  are refused with the shape to reshape to;
* values are finite and, for a pyro-vae model, inside its likelihood's support.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CheckpointError, ConfigError, DataError, PyroVAEError, UserCodeError


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


def as_data(model: Any, x: Any, caller: str, name: str = "x") -> torch.Tensor:
    """``x`` as float32 data of ``model``'s shape, on the device it came on (the rules in this
    module's docstring), or a one-line :class:`DataError` naming ``caller`` and the argument."""
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
    if x.dtype != torch.float32:
        x = x.to(torch.float32)  # the stated rule: float32, integers not rescaled
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
    from .models import Model

    if isinstance(model, Model):
        model.check_data(x)  # the likelihood's support (e.g. [0, 1] for Bernoulli)
    return x


def check_count(value: Any, name: str, low: int = 1) -> int:
    """A whole-number argument at least ``low`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


# -- the user's own code -----------------------------------------------------------------------------
_PACKAGE = Path(__file__).resolve().parent


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs if d)


def is_users_file(filename: str) -> bool:
    """A source file of the user's: not pyro-vae's, not the standard library's nor an installed
    package's (``<frozen ...>`` and ``<string>`` frames are not the user's either)."""
    if not filename or filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    if path.startswith(str(_PACKAGE) + os.sep):
        return False
    return not path.startswith(_library_dirs())


def _location(error: BaseException) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost frame of ``error``'s traceback outside pyro-vae,
    the standard library and installed packages (for a syntax error, where it is)."""
    if isinstance(error, SyntaxError) and error.filename and is_users_file(error.filename):
        return error.filename, error.lineno or 0, "<module>"
    found = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        if is_users_file(frame.f_code.co_filename):
            found = (frame.f_code.co_filename, line, frame.f_code.co_name)
    return found


#: source files (and package folders) of the user's code that this process imported or was given:
#: plugins (--import, entry points) and the modules of the parts a run uses
_users_sources: set[str] = set()


def remember_users_module(module: Any) -> None:
    """Note ``module`` (a module object or name) as the user's: an exception raised in its code is
    reported as theirs (:func:`blame`)."""
    mod = sys.modules.get(module) if isinstance(module, str) else module
    file = getattr(mod, "__file__", None)
    if not file:
        return
    path = Path(file).resolve()
    _users_sources.add(str(path.parent) + os.sep if path.name == "__init__.py" else str(path))


def _remembered(file: str) -> bool:
    path = str(Path(file).resolve())
    return path in _users_sources or path.startswith(tuple(_users_sources) or ("\0",))


def users_frame(error: BaseException) -> tuple[str, int, str] | None:
    """Where in a module of the user's (:func:`remember_users_module`) ``error`` was raised: the
    innermost such frame, or None."""
    found = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        if _remembered(frame.f_code.co_filename):
            found = (frame.f_code.co_filename, line, frame.f_code.co_name)
    return found


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, where it happened in the user's code, and ``--debug``."""
    if isinstance(error, SystemExit):
        text = f"it called exit({error.code!r})" if error.code is not None else "it called exit()"
    else:
        lines = str(error).strip().splitlines()  # Pyro appends the trace's shapes on more lines
        message = " ".join(lines[0].split())[:300] if lines else ""
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    where = _location(error)
    if where is not None:
        text += f" (at {where[0]}:{where[1]}, in {where[2]})"
    return text + "; --debug shows the traceback"


@contextlib.contextmanager
def users_code(what: str, verb: str = "failed") -> Iterator[None]:
    """Run the user's code: an exception from it (``exit()`` included, Ctrl-C not) becomes a
    one-line :class:`UserCodeError` "``what`` ``verb``: Type: message (at file:line)"."""
    try:
        yield
    except UserCodeError:
        raise
    except PyroVAEError as e:  # e.g. a plugin registering a name twice: say whose code it was
        raise UserCodeError(f"{what} {verb}: {e}") from e
    except (Exception, SystemExit) as e:
        raise UserCodeError(f"{what} {verb}: {describe(e)}") from e


def is_users_object(obj: Any) -> bool:
    """A class, function or object defined in the user's code: not in pyro-vae, the standard
    library or an installed package (a class typed in a notebook or ``__main__`` is the user's)."""
    cls = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    module = getattr(cls, "__module__", "") or ""
    if module == "pyro_vae" or module.startswith("pyro_vae."):
        return False
    file = getattr(sys.modules.get(module), "__file__", None)
    if file is None:
        return module == "__main__"
    return is_users_file(file) or _remembered(file)  # an installed plugin lives in site-packages


def user_parts(config: Any, model: Any = None, dataset: Any = None) -> dict[str, str]:
    """The parts of a run that are the user's, as ``{"the guide 'my-guide'": "my_parts"}``: a
    registered name whose factory lives outside pyro-vae, a model or data set passed as an object."""
    from .data import DATASETS
    from .guides import GUIDES
    from .likelihoods import LIKELIHOODS
    from .models import MODELS
    from .nn import NETWORKS
    from .objectives import OBJECTIVES
    from .priors import PRIORS

    m, t = config.model, config.train
    named = [
        (GUIDES, m.guide),
        (PRIORS, m.prior),
        (LIKELIHOODS, m.likelihood),
        (NETWORKS, m.network),
        (OBJECTIVES, t.objective),
        (MODELS, m.model),
        (DATASETS, config.data.dataset),
    ]
    out = {}
    for registry, name in named:
        if name in registry:
            factory = registry.get(name)
            if registry is DATASETS:  # a DatasetSource of pyro-vae's wrapping the user's loader
                factory = factory.load
            if is_users_object(factory):
                out[f"the {registry.kind} {name!r}"] = _module_of(factory)
    for module in out.values():
        remember_users_module(module)
    if model is not None and is_users_object(model):
        out[f"the model {type(model).__qualname__}"] = _module_of(model)
    if dataset is not None:  # a Dataset, or its training rows read by the user's RowSource
        for obj in (dataset, getattr(dataset, "train", None)):
            if obj is not None and is_users_object(obj):
                out[f"the data set {type(obj).__qualname__}"] = _module_of(obj)
    return out


def _module_of(obj: Any) -> str:
    cls = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    return getattr(cls, "__module__", None) or "?"


@contextlib.contextmanager
def parts_boundary(parts: dict[str, str], call: str) -> Iterator[None]:
    """Around a call that runs the user's ``parts`` (:func:`user_parts`): an unexpected exception
    is reported as theirs, naming the part whose module raised it, or, when it surfaced in pyro-vae,
    Pyro or torch (a wrong shape, a NaN parameter), the user's parts the call ran. Without user
    parts nothing changes: an exception then is pyro-vae's own bug."""
    try:
        yield
    except PyroVAEError:
        raise
    except Exception as e:
        if not parts:
            raise
        where = users_frame(e)
        culprits = [
            label
            for label, module in parts.items()
            if where is not None and _file_of(module) == str(Path(where[0]).resolve())
        ] or list(parts)
        names = ", ".join(f"{label} ({parts[label]})" for label in culprits)
        raise UserCodeError(
            f"{call} failed in your code: {names} raised {describe(e)}; check that it returns "
            "what its kind must (shapes, finite values)"
        ) from e


def _file_of(module: str) -> str | None:
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    return str(Path(file).resolve()) if file else None


#: the user's parts of the run this process loaded or trained last (:func:`note_parts`), for the
#: CLI to name when a command fails in them after the run was loaded (sampling, scoring, drawing)
_noted: dict[str, str] = {}


def note_parts(parts: dict[str, str]) -> None:
    _noted.clear()
    _noted.update(parts)


def blame(error: BaseException) -> str | None:
    """The one-line report of an unexpected exception that is the user's: raised in their code,
    or in a run that uses their parts; None when it is pyro-vae's own bug."""
    if isinstance(error, PyroVAEError):
        return None
    if _noted:
        try:
            with parts_boundary(dict(_noted), "the command"):
                raise error
        except UserCodeError as e:
            return str(e)
    if users_frame(error) is not None:
        return f"your code raised {describe(error)}"
    return None


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
    for name, value in (("resume", resume), ("progress", progress)):
        if not isinstance(value, bool):
            raise ConfigError(f"train: {name} must be True or False, got {value!r}")
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


# -- sizes that become allocations -------------------------------------------------------------------
#: bytes per parameter while training: the weights, their gradients and Adam's two moments (float32)
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_memory(
    model_config: Any, x_shape: Any, num_classes: int | None, device: Any, training: bool = True
) -> int:
    """The number of parameters of the model ``model_config`` describes, counted by building it on
    PyTorch's meta device (no memory); a model that could not fit in ``device``'s memory is refused
    before it is built, naming its size (a hidden size of 10**5 from a configuration file or a
    received checkpoint, a 30000-pixel image size)."""
    from .models import build_model
    from .safety import check_allocation

    try:
        with torch.device("meta"):
            meta = build_model(model_config, tuple(x_shape), num_classes)
    except PyroVAEError:
        raise
    except Exception:  # a part that cannot be built on the meta device: built for real below
        return 0
    count = sum(p.numel() for p in meta.parameters())
    per = TRAINING_BYTES_PER_PARAMETER if training else 4
    hidden = " ".join(map(str, model_config.hidden))
    check_allocation(
        count * per,
        f"the model ({count:,} parameters: --hidden {hidden}, data of shape {tuple(x_shape)})",
        "use smaller --hidden layers or smaller images",
        device,
    )
    return count


def check_fast_on(fast: str, device: Any) -> None:
    """``--fast reduce-overhead`` compiles with CUDA graphs: refused on any other device rather than
    silently compiled without them."""
    if fast == "reduce-overhead" and torch.device(device).type != "cuda":
        raise ConfigError(
            f"--fast reduce-overhead uses CUDA graphs, which need a GPU, but this run trains on "
            f"{torch.device(device).type}; use --fast compile (or eager) on the CPU"
        )


def finite_result(name: str, value: Any) -> Any:
    """``value`` (a number, tensor or array) if every entry is finite, else a one-line
    :class:`DataError`: a loaded model that gives NaN or infinite values (weights that overflow,
    a damaged or diverged run) has no number to report."""
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(
            f"{name} is not finite (NaN or infinite) for these data: the model's weights overflow "
            "or the run diverged, so there is no number to report; retrain it"
        )
    return value
