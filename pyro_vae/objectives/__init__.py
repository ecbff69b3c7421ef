"""The objective family. Each objective is one module and one registry entry."""

from . import elbo, meanfield  # noqa: F401  (registers the objectives)
from .base import OBJECTIVES

__all__ = ["OBJECTIVES"]
