"""What a run records about a model passed to :func:`pyro_vae.train` as an object.

The model describes itself (:func:`pyro_vae.describe`): ``config.json``'s model section is filled in
from the arguments it was built with (its registered name, latent size, networks, guide, prior,
likelihood and their options), and the full description goes into the checkpoint and
``model.json``, from which :func:`pyro_vae.load_run` rebuilds it without ``model=``. A part that is
not registered is named ``"custom:<module>.<class>"``; a model that cannot be described (a class
defined in a script, a raw ``nn.Module`` among its arguments) is recorded with the reason, which
``load_run`` repeats.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from .config import ModelConfig, RunConfig
from .describe import NotDescribable, arguments, describe, json_value, rebuild
from .errors import CheckpointError, ConfigError
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .models import MODELS
from .priors import PRIORS
from .registry import Registry

#: the checkpoint entry and run file holding a model object's description
DESCRIPTION_KEY = "model_description"
MODEL_JSON = "model.json"

_PARTS: dict[str, Registry] = {"guide": GUIDES, "prior": PRIORS, "likelihood": LIKELIHOODS}


def custom_name(obj: Any) -> str:
    """How ``config.json`` names a model or part that is not a registered entry."""
    cls = type(obj)
    return f"custom:{cls.__module__}.{cls.__qualname__}"


def registered_name(registry: Registry, cls: type) -> str | None:
    return next((n for n in registry.names() if registry.get(n) is cls), None)


def model_record(model: nn.Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``config.json``'s model section for ``model``, its description or ``{"error": why not}``)."""
    try:
        description: dict[str, Any] = describe(model)
    except NotDescribable as e:
        description = {"error": str(e)}
    section = {"model": registered_name(MODELS, type(model)) or custom_name(model)}
    args = arguments(model)
    if args is None:
        return section, description
    # a subclass of a registered model: what it gave that model's constructor fills in the rest
    base = next((c for c in type(model).__mro__[1:] if registered_name(MODELS, c)), None)
    if base is not None and section["model"].startswith("custom:"):
        args = {**(arguments(model, base) or {}), **args}
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    own_options = MODELS.settable(
        type(model)
    )  # the model's own options (ModelConfig.model_options)
    for key, value in args.items():
        if key in _PARTS:
            registry = _PARTS[key]
            if isinstance(value, str):
                section[key] = value
                continue
            name = registered_name(registry, type(value))
            section[key] = name or custom_name(value)
            own = arguments(value) or {}
            section[f"{key}_options"] = {
                k: json_value(v)
                for k, v in own.items()
                if name is None or k not in registry.supplied
            }
        elif key.endswith("_options") and key[: -len("_options")] in _PARTS:
            if isinstance(args.get(key[: -len("_options")]), str):
                section[key] = dict(value or {})
        elif key in own_options:
            section.setdefault("model_options", {})[key] = json_value(value)
        elif key in names and key != "model" and isinstance(value, (int, float, str, tuple, list)):
            section[key] = tuple(value) if isinstance(value, list) else value
    return {k: v for k, v in section.items() if k in names}, description


def record_model(
    config: RunConfig, model: nn.Module, *, legacy: bool = False
) -> tuple[RunConfig, dict[str, Any]]:
    """``config`` with its model section saying what ``model`` is, and ``model``'s description.

    ``legacy``: continuing a run that recorded only the model's class (pyro-vae 0.1), whose
    configuration must stay as it was.
    """
    section, description = model_record(model)
    if legacy:  # pyro-vae 0.1 named every model object by its class
        return config.replace(model={"model": custom_name(model)}), description
    if arguments(model) is None:
        return config.replace(model={"model": section["model"]}), description
    return dataclasses.replace(config, model=ModelConfig(**section)), description


def rebuild_model(description: dict[str, Any], run_dir: Path) -> nn.Module:
    """The model a run's description names, built afresh; :class:`CheckpointError` saying why not."""
    why = description.get("error")
    if why is None:
        try:
            return rebuild(description)
        except ConfigError as e:
            why = str(e)
    raise CheckpointError(
        f"the run in {run_dir} trained a model passed as an object, which cannot be rebuilt here: "
        f"{why}. Build the same architecture and reload with pyro_vae.load_run(run_dir, model=...)"
    )
