from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..errors import ConfigError
from .base import PRIORS, Prior


@PRIORS.register("mixture")
class GaussianMixture(Prior):
    r"""A learned mixture of diagonal Gaussians:

    .. math:: p(z) = \sum_{c=1}^{C} \pi_c \, N(z; m_c, \mathrm{diag}\, s_c^2),

    with logits, means and scales all trained with the model (``C = components``). Means start spread
    as ``N(0, init_spread^2 I)`` and scales at one, so that at initialisation the mixture is close to
    ``N(0, I)`` yet its components are distinct. No closed-form KL exists against it, so
    :class:`~pyro.infer.TraceMeanField_ELBO` falls back to the Monte Carlo estimate.
    """

    def __init__(self, latent_dim: int, components: int = 10, init_spread: float = 0.5) -> None:
        super().__init__(latent_dim)
        if not isinstance(components, int) or isinstance(components, bool) or components < 1:
            raise ConfigError(
                f"the mixture prior needs a positive number of components, got {components!r}"
            )
        self.components = components
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(init_spread * torch.randn(components, latent_dim))
        # softplus^-1(1) so the scales start at one
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), 0.5413248546129181))

    def forward(self) -> dist.TorchDistribution:
        comps = dist.Normal(self.locs, softplus(self.raw_scales) + 1e-4, validate_args=False)
        return dist.MixtureSameFamily(
            dist.Categorical(logits=self.logits, validate_args=False),
            comps.to_event(1),
            validate_args=False,
        )
