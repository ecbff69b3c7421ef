"""The objective family. Each objective is one module and one registry entry.

:func:`build_objective` is how runs build them: a registered objective by name, wrapped for KL
weighting (``beta``, ``kl_anneal``, ``kl_anneal_start``, ``free_bits``) when asked.
"""

from . import dreg, elbo, iwae, meanfield, renyi  # noqa: F401  (registers the objectives)
from .base import OBJECTIVES
from .importance import ImportanceWeightedELBO, log_weights
from .kl import KLWeighted, build_objective, objective_for

__all__ = [
    "OBJECTIVES",
    "ImportanceWeightedELBO",
    "KLWeighted",
    "build_objective",
    "log_weights",
    "objective_for",
]
