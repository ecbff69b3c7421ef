"""Likelihoods p(x|z): Bernoulli on logits, Gaussian (fixed or learned scale), continuous Bernoulli,
discretized logistic and its mixture (8-bit pixels)."""

from .base import LIKELIHOODS, Likelihood
from .bernoulli import Bernoulli
from .continuous_bernoulli import ContinuousBernoulli
from .discretized import (
    DiscretizedLogistic,
    DiscretizedLogisticLikelihood,
    DiscretizedLogisticMixture,
    LogisticMixtureLikelihood,
)
from .gaussian import Gaussian

__all__ = [
    "LIKELIHOODS",
    "Bernoulli",
    "ContinuousBernoulli",
    "DiscretizedLogistic",
    "DiscretizedLogisticLikelihood",
    "DiscretizedLogisticMixture",
    "Gaussian",
    "Likelihood",
    "LogisticMixtureLikelihood",
]
