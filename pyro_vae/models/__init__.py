"""Generative models written as Pyro model/guide pairs.

A new model is one module holding a :class:`Model` subclass and one ``MODELS.register`` line. Its
options are the keyword arguments of its ``__init__`` beyond :data:`~pyro_vae.models.base.SHARED_ARGUMENTS`:
they are typed from the signature and reach it as ``--model-opt KEY=VALUE`` or
``ModelConfig(model_options={KEY: VALUE})``, with no change anywhere else.
"""

from .adgm import ADGM, SDGM
from .base import (
    MODEL_SPECIFIC,
    MODELS,
    Model,
    PyroPair,
    as_model,
    build_model,
    check_model_options,
    unique_name,
)
from .cvae import CVAE
from .hierarchical import HierarchicalVAE
from .m2 import M2
from .stacked import StackedM2
from .vae import VAE

__all__ = [
    "ADGM",
    "SDGM",
    "CVAE",
    "MODELS",
    "MODEL_SPECIFIC",
    "M2",
    "HierarchicalVAE",
    "Model",
    "PyroPair",
    "StackedM2",
    "VAE",
    "as_model",
    "build_model",
    "check_model_options",
    "unique_name",
]
