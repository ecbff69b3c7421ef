"""Likelihoods p(x|z): Bernoulli on logits, Gaussian (fixed or learned scale), continuous Bernoulli."""

from .base import LIKELIHOODS, Likelihood
from .bernoulli import Bernoulli
from .continuous_bernoulli import ContinuousBernoulli
from .gaussian import Gaussian

__all__ = ["LIKELIHOODS", "Bernoulli", "ContinuousBernoulli", "Gaussian", "Likelihood"]
