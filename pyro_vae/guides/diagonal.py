from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from .base import GUIDES, AmortizedGuide, check_float


@GUIDES.register("diagonal")
class DiagonalNormal(AmortizedGuide):
    """q(z|x) = N(z; mu(x), diag(sigma(x)^2)), the mean-field Gaussian of Kingma and Welling (2014).

    ``mu = W_mu h + b_mu`` and ``sigma = softplus(W_s h + b_s) + min_scale``; softplus rather than exp
    keeps the scale's gradient bounded when the encoder saturates.
    """

    def __init__(self, feature_dim: int, latent_dim: int, min_scale: float = 1e-5) -> None:
        super().__init__(feature_dim, latent_dim)
        # a zero floor lets softplus underflow to a zero scale (log q = -inf, NaN gradients)
        self.min_scale = check_float(min_scale, "min_scale", self._owner)
        self.loc = nn.Linear(feature_dim, latent_dim)
        self.raw_scale = nn.Linear(feature_dim, latent_dim)

    def loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.loc(h), softplus(self.raw_scale(h)) + self.min_scale

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        loc, scale = self.loc_scale(h)
        return dist.Normal(loc, scale, validate_args=False).to_event(1)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.loc(h)
