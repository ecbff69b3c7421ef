from __future__ import annotations

import pyro.distributions as dist
import torch

from .base import LIKELIHOODS, Likelihood, check_unit_interval


@LIKELIHOODS.register("continuous-bernoulli")
class ContinuousBernoulli(Likelihood):
    """x_i ~ ContinuousBernoulli(sigmoid(logit_i)) (Loaiza-Ganem and Cunningham 2019).

    The properly normalised density on [0, 1] for continuous pixels.
    """

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=out, validate_args=False).to_event(len(self.x_shape))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return dist.ContinuousBernoulli(logits=out, validate_args=False).mean

    def check(self, x: torch.Tensor) -> None:
        check_unit_interval(x, "continuous-bernoulli")
