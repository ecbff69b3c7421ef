from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ..errors import ConfigError
from ..guides.base import check_float
from .base import PRIORS, Prior


class DiagonalNormalMixture(dist.MixtureSameFamily):
    r"""A mixture of diagonal Gaussians (components ``Normal(loc (C, D), scale (C, D)).to_event(1)``)
    whose ``log_prob`` avoids the ``(..., C, D)`` intermediate of :class:`MixtureSameFamily`.

    The component quadratic forms are expanded into matrix products,
    :math:`\sum_d (z_d - m_{cd})^2 / s_{cd}^2 = z^2 \cdot s_c^{-2} - 2 z \cdot m_c s_c^{-2} + m_c^2 \cdot s_c^{-2}`,
    evaluated in float64 because the three terms can be large and nearly cancel (posterior scales
    of a trained encoder are small). Same density, same sampling; for VampPriors with hundreds of
    components and thousands of importance samples this is what makes scoring affordable.
    """

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        normal = self.component_distribution.base_dist
        # Pyro's plates expand the prior to the batch: undo those stride-0 views to keep one product
        loc, scale = _unexpand(normal.loc, 2), _unexpand(normal.scale, 2)  # (C, D) or (..., C, D)
        logits = _unexpand(self.mixture_distribution.logits, 1)
        v, m = value.double(), loc.double()
        prec = scale.double().pow(-2)
        if m.dim() == 2:  # one (N, D) x (D, C) product for all leading dims of the value
            quad = v.pow(2) @ prec.T - 2 * v @ (m * prec).T
        else:
            v = v.unsqueeze(-2)
            quad = (v.pow(2) @ prec.mT - 2 * v @ (m * prec).mT).squeeze(-2)
        quad = quad + (m.pow(2) * prec).sum(-1)  # (..., C)
        log_norm = -scale.double().log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_mix = torch.log_softmax(logits.double(), -1)
        return torch.logsumexp(log_mix + log_norm - 0.5 * quad, -1).to(value.dtype)


def _unexpand(t: torch.Tensor, keep: int) -> torch.Tensor:
    """``t`` without its leading broadcast (stride-0) dims, keeping at least ``keep`` dims."""
    while t.dim() > keep and t.stride(0) == 0:
        t = t[0]
    return t


def diagonal_mixture(
    logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor
) -> DiagonalNormalMixture:
    """The mixture with weights ``softmax(logits)`` of ``N(loc[c], diag scale[c]^2)``, event ``(D,)``."""
    comps = dist.Normal(loc, scale, validate_args=False).to_event(1)
    mix = dist.Categorical(logits=logits, validate_args=False)
    return DiagonalNormalMixture(mix, comps, validate_args=False)


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
        init_spread = check_float(init_spread, "init_spread", self._owner, allow_zero=True)
        if init_spread == 0 and components > 1:
            # identical components get identical gradients: they would never separate
            raise ConfigError(
                f"the mixture prior's option init_spread must be positive with {components} "
                "components (at 0 they start identical and stay identical); set it with "
                "--prior-opt init_spread=0.5"
            )
        self.components = components
        self.logits = nn.Parameter(torch.zeros(components))
        self.locs = nn.Parameter(init_spread * torch.randn(components, latent_dim))
        # softplus^-1(1) so the scales start at one
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), 0.5413248546129181))

    def forward(self) -> dist.TorchDistribution:
        return diagonal_mixture(self.logits, self.locs, softplus(self.raw_scales) + 1e-4)
