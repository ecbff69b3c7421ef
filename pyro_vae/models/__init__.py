"""Generative models written as Pyro model/guide pairs."""

from .adgm import ADGM, SDGM
from .base import MODEL_SPECIFIC, MODELS, Model, build_model, check_model_options, unique_name
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
    "StackedM2",
    "VAE",
    "build_model",
    "check_model_options",
    "unique_name",
]
