"""What a run is made of, looked at before it is built: the parts that are the user's own (named
when they fail, :func:`user_parts`) and the memory its model will take (:func:`check_model_memory`)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .errors import PyroVAEError
from .usercode import is_users_object, remember_users_module


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
