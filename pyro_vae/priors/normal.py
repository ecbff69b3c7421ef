from __future__ import annotations

import pyro.distributions as dist
import torch

from .base import PRIORS, Prior


@PRIORS.register("normal")
class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__(latent_dim)
        # buffers follow the module to the model's device and dtype
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        return dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)
