"""Generative models written as Pyro model/guide pairs."""

from .base import MODELS, build_model
from .vae import VAE

__all__ = ["MODELS", "VAE", "build_model"]
