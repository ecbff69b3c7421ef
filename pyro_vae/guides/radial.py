from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from pyro.distributions.transforms import ConditionalRadial
from pyro.distributions.transforms.radial import ConditionedRadial
from torch.nn.functional import softplus

from .base import GUIDES, check_hidden
from .flow import FlowGuide, ParamNet, memoize


class InvertibleRadial(ConditionedRadial):
    r"""Pyro's conditioned radial transform ``y = x + beta / (alpha + r) (x - x0)`` with an exact inverse.

    Taking norms, ``rho = |y - x0| = r (1 + beta / (alpha + r))``, a quadratic in ``r`` whose
    non-negative root is unique when ``beta > -alpha``; then ``x = x0 + (y - x0) (alpha + r) /
    (alpha + r + beta)``. The log-determinant is computed from ``x`` (no state kept between calls).
    """

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0, alpha_prime, beta_prime = self._params()
        alpha = softplus(alpha_prime)
        return x0, alpha, -alpha + softplus(beta_prime)  # the same map as Pyro's forward pass

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x0, alpha, beta = self._parts()
        diff = y - x0
        rho = diff.norm(dim=-1, keepdim=True)
        # r^2 + (alpha + beta - rho) r - rho alpha = 0; the two forms of the positive root avoid
        # cancellation for either sign of the linear coefficient
        b = alpha + beta - rho
        disc = torch.sqrt(b * b + 4 * rho * alpha)
        r = torch.where(b > 0, 2 * rho * alpha / (b + disc), (disc - b) / 2)
        return x0 + diff * (alpha + r) / (alpha + r + beta)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x0, alpha, beta = self._parts()
        r = (x - x0).norm(dim=-1, keepdim=True)
        h = (alpha + r).reciprocal()
        beta_h = beta * h
        out = (x.shape[-1] - 1) * torch.log1p(beta_h) + torch.log1p(beta_h - beta * h.pow(2) * r)
        return out.sum(-1)


class ConditionalInvertibleRadial(ConditionalRadial):
    """Pyro's :class:`~pyro.distributions.transforms.ConditionalRadial`, conditioning to
    :class:`InvertibleRadial` with its parameters computed once per context."""

    def condition(self, context: torch.Tensor) -> InvertibleRadial:
        return InvertibleRadial(memoize(partial(self._params, context)))


@GUIDES.register("radial")
class RadialFlow(FlowGuide):
    r"""Amortized radial flows (Rezende and Mohamed 2015, section 4.1):

    .. math:: z_k = z_{k-1} + \frac{\beta_k(h)}{\alpha_k(h) + r}\,(z_{k-1} - z_{0,k}(h)),
              \quad r = \lVert z_{k-1} - z_{0,k}(h) \rVert, \quad k = 1..K,

    on top of ``N(mu(h), diag sigma(h)^2)``; ``alpha > 0`` and ``beta > -alpha`` keep each layer
    invertible. Built on Pyro's :class:`~pyro.distributions.transforms.ConditionalRadial` with the
    parameters a map of the encoder features ``h``; ``num_flows`` is K.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_flows: int = 10,
        hidden: Sequence[int] = (),
        min_scale: float = 1e-5,
    ) -> None:
        self.hidden = check_hidden(hidden, self._owner)
        super().__init__(feature_dim, latent_dim, num_flows, min_scale)

    def make_transform(self, layer: int) -> ConditionalInvertibleRadial:
        return ConditionalInvertibleRadial(
            ParamNet(self.feature_dim, self.hidden, [self.latent_dim, 1, 1])
        )
