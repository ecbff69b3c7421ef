from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive, SplineAutoregressive
from torch import nn

from ..errors import ConfigError
from ..guides.base import check_float, check_hidden, check_int
from ..guides.flow import MADE
from .base import PRIORS, Prior

KINDS = ("autoregressive", "spline")


@PRIORS.register("flow")
class FlowPrior(Prior):
    r"""A learned normalizing-flow prior, a masked autoregressive flow (Papamakarios et al. 2017):

    .. math:: p(z) = N(f(z); 0, I)\,\lvert\det \partial f / \partial z\rvert,
              \quad f = T_1 \circ \dots \circ T_K,

    where each ``T_k`` is autoregressive, affine (``kind="autoregressive"``, Pyro's
    :class:`~pyro.distributions.transforms.AffineAutoregressive`) or a rational spline
    (``kind="spline"``, :class:`~pyro.distributions.transforms.SplineAutoregressive`). The prior is
    scored far more often than sampled, so ``f`` is the fast direction: scoring is one network pass per
    layer, sampling (``model.sample``) ``D`` passes. Each call clears the layers' one-entry caches, so
    a ``z`` scored before a parameter update is never answered from a stale cache after it.
    """

    def __init__(
        self,
        latent_dim: int,
        kind: str = "autoregressive",
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
        count_bins: int = 8,
        bound: float = 3.0,
    ) -> None:
        super().__init__(latent_dim)
        if kind not in KINDS:
            raise ConfigError(f"unknown flow prior kind {kind!r}: choose one of {', '.join(KINDS)}")
        if not isinstance(num_flows, int) or isinstance(num_flows, bool) or num_flows < 1:
            raise ConfigError(f"num_flows must be a positive integer, got {num_flows!r}")
        # count_bins and bound shape spline layers only, but are refused out of range for any kind
        count_bins = check_int(count_bins, "count_bins", self._owner, low=2)
        bound = check_float(bound, "bound", self._owner)
        if hidden is not None:
            hidden = check_hidden(hidden, self._owner, allow_empty=False)
        d = self.latent_dim
        widths = [max(w, d) for w in (hidden if hidden is not None else [max(4 * d, 16)])]
        self.kind = kind
        layers = []
        for k in range(num_flows):
            perm = torch.arange(d) if k % 2 == 0 else torch.arange(d).flip(0)
            if kind == "autoregressive":
                arn = MADE(d, widths, param_dims=[1, 1], permutation=perm)
                t = AffineAutoregressive(arn)
            else:
                b = count_bins
                arn = MADE(d, widths, param_dims=[b, b, b - 1, b], permutation=perm)
                t = SplineAutoregressive(d, arn, count_bins=b, bound=bound)
            layers.append(t)
        self.layers = nn.ModuleList(layers)
        self.register_buffer("loc", torch.zeros(d))
        self.register_buffer("scale", torch.ones(d))

    def forward(self) -> dist.TorchDistribution:
        if self.kind == "spline" and torch.jit.is_tracing():
            raise ConfigError(
                "the spline flow prior cannot be traced by the JIT (Pyro's spline uses "
                "data-dependent masks); use --objective elbo instead of jit-elbo"
            )
        base = dist.Normal(self.loc, self.scale, validate_args=False).to_event(1)
        for t in self.layers:
            t._cached_x_y = None, None
        # z = f^{-1}(eps): sampling applies T_K^{-1} last; scoring applies the layers themselves (fast),
        # T_K first, each read once thanks to the cache between the map and its log-determinant
        inverses = [t.inv for t in self.layers]
        return dist.TransformedDistribution(base, inverses, validate_args=False)
