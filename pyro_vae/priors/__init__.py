"""Priors p(z)."""

from .base import PRIORS, Prior
from .normal import StandardNormal

__all__ = ["PRIORS", "Prior", "StandardNormal"]
