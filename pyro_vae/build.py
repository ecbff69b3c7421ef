"""The build layer: a run's configuration checked against every part, and the run's parts built.

The one module that knows every family at once. Below it each part owns its options and checks them
(:mod:`pyro_vae.data`, :mod:`pyro_vae.engine`, :mod:`pyro_vae.loggers`, the objectives, the models
and their guides, priors and likelihoods); :mod:`pyro_vae.config` is a leaf that only reads, writes and
types the fields. The trainer and the command line call :func:`validate`, :func:`model_for` and
:func:`training_parts`; every reader of a run's checkpoint calls :func:`read_checkpoint`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from pyro.optim import PyroOptim

from .checkpoint import load_checkpoint
from .config import RunConfig
from .data import Dataset, check_data_options, check_data_values, dataset_options
from .engine import check_engine_options
from .errors import CheckpointError, ConfigError
from .loggers import check_loggers
from .models import MODELS, Model, build_model, check_model_options
from .models.base import as_model, check_parts_config
from .objectives.kl import objective_for, objective_options
from .optim import adam
from .plan import TrainingPlan


def validate(
    config: RunConfig, *, model_class: type | None = None, check_data: bool = True
) -> RunConfig:
    """``config`` checked and normalised; raises :class:`~pyro_vae.ConfigError` on anything no run
    can use.

    Field types are coerced from the annotations, and each part's options (guide, prior, likelihood,
    objective, model) from that part's signature, so ``{"centred": "False"}`` becomes ``False``.
    Names must be registered; options that the chosen model or data set does not read are refused.
    ``model_class`` is the class of a model passed as an object (its signature and declarations are
    checked instead of the registered model's); ``check_data=False`` skips the options that depend
    on the named data set (for data passed as an object, or a received run's data that may live
    elsewhere), but not the values no data set can use.
    """
    config = config.coerced()
    check_engine_options(config.train)
    check_loggers(config.train.loggers)
    config = config.replace(
        model=dataclasses.asdict(check_parts_config(config.model)),
        train={"objective_options": objective_options(config.train)},
    )
    options = check_model_options(config, model_class)
    config = config.replace(model={"model_options": options})
    if check_data:
        check_data_options(config.data)
        config = config.replace(data={"dataset_options": dataset_options(config.data)})
    else:
        check_data_values(config.data)
    return config


def training_parts(
    config: RunConfig, model: Model, data: Dataset
) -> tuple[PyroOptim, TrainingPlan]:
    """The optimiser and the epoch of steps that train ``model`` on ``data`` as ``config`` says:
    Adam, the configured objective with its KL weighting, and the model's own training plan."""
    optim = adam(config.train.lr)
    plan = model.training_plan(data, config, optim, objective_for(config.train))
    if not isinstance(plan, TrainingPlan):
        raise TypeError(f"{type(model).__name__}.training_plan must return a TrainingPlan")
    return optim, plan


def model_for(config: RunConfig, data: Dataset, model: Any | None = None) -> Model:
    """The run's model: ``model`` where one was passed (a plain object with Pyro ``model`` and
    ``guide`` methods is wrapped into a :class:`~pyro_vae.Model` here, once), else the registered
    model that ``config.model`` names, built for ``data``."""
    if model is None:
        return build_model(config.model, data.x_shape, data.num_classes)
    return as_model(model)


def read_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """:func:`pyro_vae.checkpoint.load_checkpoint`, with the configuration inside checked as a new
    one is (:func:`received_config`): every reader of a run goes through here, so a received run is
    never acted on before its configuration passes."""
    return load_checkpoint(path, map_location, check_config=received_config)


def received_config(config: RunConfig, path: Path) -> RunConfig:
    """A checkpoint's configuration passes the checks a new one does (a received run may hold a
    negative seed or a hidden size of 10**9): the same :func:`validate`, less the data
    set's options (the data may live elsewhere here)."""
    # a model passed as an object is checked as a Model: its own class is rebuilt and checked later
    known = config.model.model in MODELS
    loggers = config.train.loggers  # a logger's package is needed to train, not to load a run
    # a model object's own options are its class's to check, when it is rebuilt
    own = {} if known else {"model_options": {}}
    try:
        checked = validate(
            config.replace(train={"loggers": ()}, model=own),
            model_class=None if known else Model,
            check_data=False,
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: its configuration is refused: {e}") from None
    restored = {} if known else {"model_options": config.model.model_options}
    return checked.replace(train={"loggers": loggers}, model=restored)
