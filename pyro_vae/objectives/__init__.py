"""The objective family. Each objective is one module and one registry entry.

:func:`build_objective` is how runs build them: a registered objective by name, wrapped for KL
weighting (``beta``, ``kl_anneal``, ``kl_anneal_start``, ``free_bits``) when asked.
"""

from . import (  # noqa: F401  (registers the objectives)
    dipvae,
    dreg,
    elbo,
    factorvae,
    iwae,
    meanfield,
    renyi,
    tcvae,
)
from .base import OBJECTIVES, AuxiliaryStep, NeedsDataSize
from .importance import ImportanceWeightedELBO, log_weights
from .kl import KLWeighted, build_objective, objective_for

__all__ = [
    "OBJECTIVES",
    "AuxiliaryStep",
    "NeedsDataSize",
    "ImportanceWeightedELBO",
    "KLWeighted",
    "build_objective",
    "log_weights",
    "objective_for",
]
