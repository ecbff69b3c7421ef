from __future__ import annotations

import pyro.distributions as dist
import torch

from .base import LIKELIHOODS, Likelihood, check_unit_interval


@LIKELIHOODS.register("bernoulli")
class Bernoulli(Likelihood):
    """x_i ~ Bernoulli(sigmoid(logit_i)), independent over pixels.

    On continuous pixels in [0, 1] this is the cross-entropy "likelihood" of the seeds and most of the
    literature; it is a proper likelihood only for binary data (binarize the data, or see the
    continuous Bernoulli). Support checks are done once on the whole data set by :meth:`check`, so the
    per-step distribution skips validation. On binary data it is a distribution over two levels
    (``discrete_bins``); on grey pixels it is not, and bits per dimension are then not reported.
    """

    discrete_bins = 2

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=out, validate_args=False).to_event(len(self.x_shape))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out)

    def check(self, x: torch.Tensor) -> None:
        check_unit_interval(x, "bernoulli")
