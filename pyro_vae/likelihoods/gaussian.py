from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..errors import ConfigError
from .base import LIKELIHOODS, Likelihood

_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def softplus_inverse(y: float) -> float:
    """``x`` with ``softplus(x) = log(1 + exp(x)) = y``, for ``y > 0``, without overflow.

    ``log(expm1(y))`` overflows for ``y`` above about 709; ``y + log(-expm1(-y))`` is the same value
    and is accurate at both ends (``-expm1(-y)`` is ``y`` for small ``y`` and 1 for large ``y``).
    """
    return y + math.log(-math.expm1(-y))


@LIKELIHOODS.register("gaussian")
class Gaussian(Likelihood):
    """x_i ~ Normal(mu_i, sigma), mu the decoder output, independent over pixels.

    ``scale`` fixes sigma; ``learn_scale=True`` learns one sigma per pixel (initialised at ``scale``).
    """

    def __init__(
        self, x_shape: Sequence[int], scale: float = 0.1, learn_scale: bool = False
    ) -> None:
        super().__init__(x_shape)
        ok = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
        if not (ok and math.isfinite(scale) and 0 < scale <= _FLOAT32_MAX):
            raise ConfigError(
                f"the gaussian likelihood's option scale must be a finite positive number, got "
                f"{scale!r}; set it with --likelihood-opt scale=0.1"
            )
        # softplus^-1(scale), so the learned scale starts at the fixed one
        raw = torch.full(self.x_shape, softplus_inverse(float(scale)))
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
