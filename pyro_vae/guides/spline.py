from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalSplineAutoregressive

from ..errors import ConfigError
from .base import GUIDES, check_float, check_hidden, check_int
from .flow import ConditionalMADE, FlowGuide, alternating_permutation


@GUIDES.register("spline")
class NeuralSplineFlow(FlowGuide):
    r"""Amortized autoregressive neural spline flow (Durkan et al. 2019; Dolatabadi et al. 2020):

    .. math:: z_{k,i} = g_{\theta_{k,i}}(z_{k-1,i}), \quad \theta_{k,i} = \mathrm{MADE}_k(z_{k-1,<i}, h),

    where ``g`` is a monotonic rational spline with ``count_bins`` segments on ``[-bound, bound]``
    (identity outside), on top of ``N(mu(h), diag sigma(h)^2)``. Each MADE sees the encoder features
    ``h`` as context, so the flow is per data point; the variable order is reversed between layers.
    Pyro's :class:`~pyro.distributions.transforms.ConditionalSplineAutoregressive`; ``order`` is
    ``"linear"`` (rational-linear) or ``"quadratic"`` (rational-quadratic).

    Not traceable by the PyTorch JIT (``jit-elbo``): Pyro's spline writes the identity outside the
    bounding box through a boolean mask, whose size a trace would freeze.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
        order: str = "linear",
        min_scale: float = 1e-5,
    ) -> None:
        if order not in ("linear", "quadratic"):
            raise ConfigError(f"spline order must be linear or quadratic, got {order!r}")
        count_bins = check_int(count_bins, "count_bins", self._owner, low=2)
        bound = check_float(bound, "bound", self._owner)
        self.hidden = (
            list(check_hidden(hidden, self._owner, allow_empty=False))
            if hidden is not None
            else [max(4 * latent_dim, 16)]
        )
        self.count_bins, self.bound, self.order = count_bins, bound, order
        super().__init__(feature_dim, latent_dim, num_flows, min_scale)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        if torch.jit.is_tracing():
            raise ConfigError(
                "the spline guide cannot be traced by the JIT (Pyro's spline uses data-dependent "
                "masks); use --objective elbo instead of jit-elbo"
            )
        return super().forward(h)

    def make_transform(self, layer: int) -> ConditionalSplineAutoregressive:
        d, b = self.latent_dim, self.count_bins
        param_dims = [b, b, b - 1] + ([b] if self.order == "linear" else [])
        arn = ConditionalMADE(
            d,
            self.feature_dim,
            [max(w, d) for w in self.hidden],
            param_dims=param_dims,
            permutation=alternating_permutation(d, layer),
        )
        return ConditionalSplineAutoregressive(
            d, arn, count_bins=b, bound=self.bound, order=self.order
        )
