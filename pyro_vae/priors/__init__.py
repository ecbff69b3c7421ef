"""Priors p(z)."""

from .base import PRIORS, Prior
from .flow import FlowPrior
from .mixture import GaussianMixture
from .normal import StandardNormal
from .vamp import VampPrior

__all__ = ["PRIORS", "FlowPrior", "GaussianMixture", "Prior", "StandardNormal", "VampPrior"]
