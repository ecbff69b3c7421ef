"""The Python API, in Python words: :func:`train` takes keyword options, and errors name arguments.

The command line is a thin layer over the same functions; its messages name flags (``--epochs``),
which a script never typed. Every function of the Python API raises the same errors with the flags
put into Python words (``epochs=3``, ``resume=True``), by :func:`python_words`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from .checkpoint import CHECKPOINT, CONFIG, METRICS, load_checkpoint, run_directory
from .config import SECTIONS, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import DATASETS, Dataset
from .errors import ConfigError, PyroVAEError
from .evaluate import elbo as _elbo
from .evaluate import log_likelihood as _log_likelihood
from .train import TrainResult
from .train import load_run as _load_run
from .train import train as _train_run

F = TypeVar("F", bound=Callable[..., Any])

#: flags of the command line that are not configuration fields -> their Python words
_COMMAND_WORDS = {
    "--resume": "resume=True",
    "--run-dir": "run_dir={}",
    "--config": "config={}",
    "--no-progress": "progress='lines'",
    "--import": "pyro_vae.import_plugin({})",
}
#: words after a flag that are English, not its value
_NOT_VALUES = frozenset(
    "a an and asks can continues for from in is leaves must needs of on only or takes the to "
    "trains would works with".split()
)


@functools.cache
def _flag_words() -> dict[str, tuple[str, str | None, type | None]]:
    """flag -> (Python argument, key inside a dict argument or None, the argument's type)."""
    out: dict[str, tuple[str, str | None, type | None]] = {}
    for kind in SECTIONS.values():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            meta = f.metadata
            for flag in meta.get("flags") or (f"--{f.name.replace('_', '-')}",):
                if flag.startswith("--"):
                    out[flag] = (f.name, None, hints[f.name])
            for flag, key, _metavar, _help in meta.get("aliases", ()):
                out[flag] = (f.name, key, None)
    return out


def _python_value(token: str) -> str:
    if re.fullmatch(r"-?[0-9][0-9.e+-]*", token) or token.isupper() or token.startswith("{"):
        return token
    return repr(token)


def python_words(message: str) -> str:
    """``message`` with the command line's flags put as the Python arguments they set:
    ``--epochs 3`` -> ``epochs=3``, ``--resume`` -> ``resume=True``, ``--flows K`` ->
    ``guide_options={'num_flows': K}``."""
    words = _flag_words()

    def replace(m: re.Match[str]) -> str:
        flag, value = m.group(1), m.group(3)
        if value is not None and value.lower() in _NOT_VALUES:
            value = None
        tail = "" if value is not None else (m.group(2) or "") + (m.group(3) or "")
        if flag in _COMMAND_WORDS:
            word = _COMMAND_WORDS[flag]
            if "{}" not in word:
                return word + (f" {value}" if value is not None else "") + tail
            if value is None:
                return word.replace("={}", "").replace("({})", "") + tail
            return word.format(_python_value(value))
        if flag not in words:
            return m.group(0)
        name, key, tp = words[flag]
        if key is not None:
            shown = value if value is not None else "..."
            return f"{name}={{{key!r}: {shown}}}" + tail
        if value is None:
            return name + tail
        if tp is not None and typing_is_dict(tp) and "=" in value:
            k, _, v = value.partition("=")
            return f"{name}={{{k!r}: {_python_value(v)}}}"
        return f"{name}={_python_value(value)}"

    return re.sub(r"(--[a-z][a-z0-9-]*)(\s)?([A-Za-z0-9_.:={}/+-]+(?<![.:]))?", replace, message)


def typing_is_dict(tp: Any) -> bool:
    return typing.get_origin(tp) is dict or tp is dict


def speaks_python(fn: F) -> F:
    """``fn`` raising its :class:`~pyro_vae.PyroVAEError` in Python words (:func:`python_words`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PyroVAEError as e:
            e.args = (python_words(str(e)),)
            raise

    return wrapper  # type: ignore[return-value]


#: files a run writes, removed by ``overwrite=True`` (nothing else in the directory is touched)
_RUN_FILES = (CHECKPOINT, CONFIG, METRICS, "model.txt", "model.json")
_RUN_FOLDERS = ("logs", "figures")

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


@speaks_python
def train(
    model_or_config: nn.Module | RunConfig | ModelConfig | str | None = None,
    data: Dataset | DataConfig | str | os.PathLike | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    objective: str | None = None,
    particles: int | None = None,
    device: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    plots: bool = False,
    progress: bool | str = True,
    config: RunConfig | None = None,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
    **options: Any,
) -> TrainResult:
    """Train a model and return it with its per-epoch history (:class:`~pyro_vae.TrainResult`).

    ``model_or_config`` is what to train: a model object (``pv.VAE(...)``, any ``pv.Model``, or an
    ``nn.Module`` with Pyro ``model``/``guide`` methods), a registered model's name (``"vae"``), a
    :class:`~pyro_vae.ModelConfig` or a whole :class:`~pyro_vae.RunConfig`. ``data`` is a
    :class:`~pyro_vae.Dataset`, a data set's name or path (``"mnist"``, ``"x.npz"``) or a
    :class:`~pyro_vae.DataConfig`; by default the configuration's (``digits``).

    The common training settings are keyword arguments (``epochs``, ``batch_size``, ``lr``,
    ``seed``, ``objective``, ``particles``, ``device``), and so is every other field of
    :class:`~pyro_vae.TrainConfig` (``beta=4.0``, ``objective_options={"alpha": 0.5}``, ...); they
    replace the configuration's. The command line's ``--flows K`` is
    ``guide_options={"num_flows": K}`` on the model, ``--alpha A`` is
    ``objective_options={"alpha": A}`` (see ``help(pv.TrainConfig)``).

    ``run_dir=None`` trains without writing anything. With ``run_dir``, the run's configuration
    (``config.json``, which says what the model is, even one passed as an object), a checkpoint after
    every epoch and ``metrics.jsonl`` are written there; a directory that already holds a run is
    refused unless ``resume=True`` (continue it, with its own configuration when none is given: the
    same result as an uninterrupted run) or ``overwrite=True`` (replace it). ``plots=True`` draws
    the figures into ``run_dir/figures``. The old call ``train(config, run_dir, ...)`` still works.
    """
    if (
        isinstance(data, (str, os.PathLike))
        and isinstance(model_or_config, RunConfig)
        and not _names_data(data)
    ):
        if run_dir is not None:
            raise ConfigError("run_dir is given twice: as the second argument and as run_dir=")
        run_dir, data = data, None  # train(config, run_dir): the order before data= existed
    if model is not None and isinstance(model_or_config, nn.Module):
        raise ConfigError("the model is given twice: as the first argument and as model=")
    if dataset is not None and data is not None:
        raise ConfigError("the data are given twice: as data= and as dataset=")
    for name, flag in (("overwrite", overwrite), ("resume", resume), ("plots", plots)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{name} must be True or False, got {flag!r}")
    if resume and overwrite:
        raise ConfigError("resume=True continues the run, overwrite=True replaces it: pass one")
    if plots and run_dir is None:
        raise ConfigError("plots=True draws into run_dir/figures: pass run_dir= too")
    if run_dir is None and resume:
        raise ConfigError("resume=True needs run_dir=, the run to continue")
    run = Path(run_dir) if run_dir is not None else None

    what = model_or_config
    if isinstance(what, nn.Module):
        model, what = what, None
    if isinstance(what, RunConfig):
        if config is not None:
            raise ConfigError("the configuration is given twice: as the first argument and config=")
        config = what
    elif what is not None and not isinstance(what, (ModelConfig, str)):
        raise ConfigError(
            f"train() trains a model object, a model's name, a ModelConfig or a RunConfig; got "
            f"a {type(what).__name__}"
        )
    if config is None and resume and (run / CHECKPOINT).exists():
        config = load_checkpoint(run / CHECKPOINT)["config"]  # continue with the run's own
    config = config if config is not None else RunConfig()
    if isinstance(what, str):
        config = config.replace(model={"model": what})
    elif isinstance(what, ModelConfig):
        config = dataclasses.replace(config, model=what)

    if isinstance(data, Dataset):
        dataset = data
    elif isinstance(data, DataConfig):
        config = dataclasses.replace(config, data=data)
    elif isinstance(data, (str, os.PathLike)):
        config = config.replace(data={"dataset": os.fspath(data)})
    elif data is not None:
        raise ConfigError(
            f"data must be a pv.Dataset, a data set's name or path, or a pv.DataConfig; got a "
            f"{type(data).__name__}"
        )

    named = dict(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        objective=objective,
        particles=particles,
        device=device,
    )
    unknown = sorted(set(options) - _TRAIN_FIELDS)
    if unknown:
        raise ConfigError(
            f"train() takes no option {', '.join(unknown)}; its training options are the fields "
            f"of pv.TrainConfig: {', '.join(sorted(_TRAIN_FIELDS))}"
        )
    changes = {k: v for k, v in {**named, **options}.items() if v is not None}
    if changes:
        config = config.replace(train=changes)

    if run is not None and not resume and (run / CHECKPOINT).exists():
        if not overwrite:
            raise ConfigError(
                f"{run} already holds a trained run; pass resume=True to continue it, "
                "overwrite=True to replace it, or another run_dir"
            )
        _remove_run(run)
    result = _train_run(config, run, resume=resume, progress=progress, dataset=dataset, model=model)
    if plots and result.rank == 0:
        from . import plots as figures

        result.figures = figures.draw_all(result.model, result.dataset, result.history, run)
    return result


def _names_data(data: str | os.PathLike) -> bool:
    """Whether a string names a data set (a registered one, a .npz/.npy file or ``folder:PATH``)
    rather than a run directory, in the old call ``train(config, run_dir)``."""
    text = os.fspath(data)
    return text in DATASETS or text.endswith((".npz", ".npy")) or text.startswith("folder:")


def _remove_run(run: Path) -> None:
    """Delete the files of the run in ``run`` (under its lock), leaving anything else there."""
    with run_directory(run, create=False):
        for name in _RUN_FILES:
            (run / name).unlink(missing_ok=True)
        for name in _RUN_FOLDERS:
            if (run / name).is_dir():
                shutil.rmtree(run / name)


load_run = speaks_python(_load_run)
elbo = speaks_python(_elbo)
log_likelihood = speaks_python(_log_likelihood)


def documented(cls: type) -> type:
    """Append to ``cls``'s docstring one line per field, from the field's metadata: its type,
    default, what it means and the command line's flag for it, so ``help(cls)`` documents every
    field."""
    hints = typing.get_type_hints(cls)
    lines = ["", "Fields (keyword arguments; the command line's flag in brackets):", ""]
    for f in dataclasses.fields(cls):
        meta: Mapping[str, Any] = f.metadata
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = repr(f.default_factory())  # type: ignore[misc]
        else:
            default = "required"
        if meta.get("default_help"):
            default = f"{default}: {meta['default_help']}"
        hint = hints[f.name]
        tp = str(hint) if typing.get_origin(hint) else getattr(hint, "__name__", str(hint))
        tp = tp.replace("typing.", "")
        flags = ", ".join(meta.get("flags") or (f"--{f.name.replace('_', '-')}",))
        lines.append(
            f"- ``{f.name}`` ({tp}, default {default}) [{flags}]: "
            + python_words(meta.get("help", ""))
        )
        for flag, key, _metavar, text in meta.get("aliases", ()):
            lines.append(f"  The flag ``{flag}`` sets ``{f.name}={{{key!r}: ...}}``: {text}.")
    cls.__doc__ = (cls.__doc__ or cls.__name__).rstrip() + "\n" + "\n".join(lines) + "\n"
    return cls


for _section in (*SECTIONS.values(), RunConfig):
    documented(_section)
