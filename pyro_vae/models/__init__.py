"""Generative models written as Pyro model/guide pairs."""

from .base import MODELS, build_model
from .cvae import CVAE
from .hierarchical import HierarchicalVAE
from .m2 import M2
from .stacked import StackedM2
from .vae import VAE

__all__ = ["CVAE", "HierarchicalVAE", "M2", "MODELS", "StackedM2", "VAE", "build_model"]
