"""Amortised variational families q(z | x)."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry


class AmortizedGuide(nn.Module):
    """Maps encoder features ``h`` of shape ``(..., feature_dim)`` to q(z|x) with event ``(latent_dim,)``.

    The encoder network is shared and lives in the model; a guide only owns the layers that turn the
    features into the variational distribution, so that any guide fits any encoder.
    Subclasses implement :meth:`forward`.
    """

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ConfigError(f"the latent size must be a positive integer, got {latent_dim}")
        self.feature_dim = feature_dim
        self.latent_dim = latent_dim

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """A point summary of q(z|x) for plots: the mean where known, else a sample's mean."""
        q = self(h)
        try:
            return q.mean
        except NotImplementedError:
            return q.rsample((64,)).mean(0)

    def prior_component(self, h: torch.Tensor) -> dist.TorchDistribution:
        """A density of z that can be scored anywhere, for the VampPrior's mixture components.

        By default q(z|x) itself. Flow guides return their Gaussian base instead: planar, radial and
        Sylvester flows have no inverse, so q(z|u) cannot score a z it did not draw.
        """
        return self(h)


GUIDES: Registry[AmortizedGuide] = Registry(
    "guide", base=AmortizedGuide, supplied=("feature_dim", "latent_dim")
)
