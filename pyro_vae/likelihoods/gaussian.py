from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..errors import ConfigError
from .base import LIKELIHOODS, Likelihood


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """x_i ~ Normal(mu_i, sigma), mu the decoder output, independent over pixels.

    ``scale`` fixes sigma; ``learn_scale=True`` learns one sigma per pixel (initialised at ``scale``).
    """

    def __init__(
        self, x_shape: Sequence[int], scale: float = 0.1, learn_scale: bool = False
    ) -> None:
        super().__init__(x_shape)
        if not scale > 0:
            raise ConfigError(f"the gaussian likelihood's scale must be positive, got {scale}")
        # softplus^-1(scale), so the learned scale starts at the fixed one
        raw = torch.full(self.x_shape, math.log(math.expm1(scale)))
        if learn_scale:
            self.raw_scale = nn.Parameter(raw)
        else:
            self.register_buffer("raw_scale", raw)

    @property
    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale) + 1e-4

    def dist(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(out, self.scale, validate_args=False).to_event(len(self.x_shape))

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return out
