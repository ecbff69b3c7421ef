from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..errors import ConfigError
from .base import GUIDES, AmortizedGuide, check_float


@GUIDES.register("lowrank")
class LowRankNormal(AmortizedGuide):
    r"""q(z|x) = N(z; mu(h), W(h) W(h)^T + diag d(h)), a Gaussian with rank-``rank`` correlations.

    ``W`` is ``(D, rank)`` and ``d = softplus(.) + min_scale^2``, all linear maps of the encoder features
    ``h``. Between the diagonal Gaussian (``rank=0`` in the limit) and a full covariance, at
    ``O(D rank)`` parameters per data point and ``O(D rank^2)`` cost to sample and score
    (Rezende et al. 2014 amortize the same rank-one-plus-diagonal family). Pyro's
    :class:`~pyro.distributions.LowRankMultivariateNormal`. ``rank`` lies in ``1..D``: at ``D`` the
    covariance is already full, and a larger rank only costs time.
    """

    def __init__(
        self, feature_dim: int, latent_dim: int, rank: int = 2, min_scale: float = 1e-5
    ) -> None:
        super().__init__(feature_dim, latent_dim)
        d = self.latent_dim
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= d:
            raise ConfigError(
                f"the lowrank guide's option rank must be an integer in 1..{d} (the latent size; "
                f"rank {d} is already a full covariance), got {rank!r}; set it with "
                f"--guide-opt rank=K for K in 1..{d}"
            )
        self.rank = rank
        self.min_scale = check_float(min_scale, "min_scale", self._owner)
        self.loc = nn.Linear(feature_dim, latent_dim)
        self.factor = nn.Linear(feature_dim, latent_dim * rank)
        self.raw_diag = nn.Linear(feature_dim, latent_dim)
        # start close to the diagonal guide: small correlations, so early training is as stable
        nn.init.normal_(self.factor.weight, std=0.01 / feature_dim**0.5)
        nn.init.zeros_(self.factor.bias)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        factor = self.factor(h).unflatten(-1, (self.latent_dim, self.rank))
        diag = softplus(self.raw_diag(h)) + self.min_scale**2
        return dist.LowRankMultivariateNormal(self.loc(h), factor, diag, validate_args=False)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.loc(h)
