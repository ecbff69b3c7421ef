"""Amortized normalizing flows: a diagonal Gaussian pushed through flows conditioned on the features.

Every flow guide is ``q(z|x) = T_K(.; h) o ... o T_1(.; h) # N(mu(h), diag sigma(h)^2)`` where ``h`` is the
encoder's output for ``x``: each data point gets its own flow (Rezende and Mohamed 2015, section 4.2).
It is Pyro's :class:`~pyro.distributions.ConditionalTransformedDistribution` with the amortized
diagonal Gaussian as its conditional base.

What every flow here relies on:

* **Broadcasting.** Vectorised particles draw ``z`` of shape ``(K, B, D)`` while ``h`` is ``(B, F)``; the
  conditioned transforms hold parameters of batch shape ``(B,)`` and broadcast them against any
  number of leading sample dimensions.
* **Caching.** Each call of the guide conditions fresh transforms whose cache (``cache_size=1``)
  remembers the last ``(x, y)`` pair. Scoring a sample right after drawing it, as every Pyro ELBO does,
  reads the inverse from the cache: autoregressive flows do not pay ``D`` sequential network passes to
  invert, and planar, radial and Sylvester flows need no inverse at all.
* **Inverses anyway.** Some objectives score a sample with a second, freshly conditioned copy of the
  guide (DReG evaluates log q with the guide's parameters stopped), which cannot read the first copy's
  cache. So the planar, radial and Sylvester transforms here also invert exactly: each reduces to
  monotone scalar equations (solved by bisection, then one differentiable Newton step, which gives
  the implicit-function gradient with respect to ``y`` and the parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import ConditionalTransformedDistribution
from pyro.distributions.conditional import ConditionalDistribution, ConditionalTransformModule
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import nn

from ..errors import ConfigError
from ..nn import mlp
from .base import AmortizedGuide, check_float
from .diagonal import DiagonalNormal


class ParamNet(nn.Module):
    """``h -> (p_1, ..., p_n)``: an MLP from the context to a flow's parameters, split by ``param_dims``.

    With ``hidden=()`` it is one linear map, the amortization of Rezende and Mohamed (2015). The output
    convention matches :class:`pyro.nn.DenseNN`, so Pyro's conditional flows accept it.
    """

    def __init__(
        self, context_dim: int, hidden: Sequence[int], param_dims: Sequence[int], act: str = "relu"
    ) -> None:
        super().__init__()
        self.param_dims = list(param_dims)
        self.net = mlp([context_dim, *hidden, sum(self.param_dims)], act)

    def forward(self, h: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        out = self.net(h)
        if len(self.param_dims) == 1:
            return out
        return tuple(out.split(self.param_dims, dim=-1))


def alternating_permutation(dim: int, layer: int) -> torch.Tensor:
    """The identity order on even layers and the reversed order on odd ones (Kingma et al. 2016).

    Fixed rather than random so that a model rebuilt from its configuration has the same orders.
    """
    order = torch.arange(dim)
    return order if layer % 2 == 0 else order.flip(0)


class MADE(AutoRegressiveNN):
    """Pyro's :class:`~pyro.nn.AutoRegressiveNN` casting its input to its own dtype.

    Pyro's autoregressive inverses start from ``torch.zeros`` of the default dtype, which a float64
    model cannot multiply; the cast makes them work at any dtype.
    """

    def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
        return super().forward(x.to(self.layers[0].weight.dtype))


class ConditionalMADE(ConditionalAutoRegressiveNN):
    """Pyro's :class:`~pyro.nn.ConditionalAutoRegressiveNN` casting its input to its own dtype (see
    :class:`MADE`)."""

    def forward(self, inputs: torch.Tensor, context: torch.Tensor) -> Any:  # type: ignore[override]
        return super().forward(inputs.to(self.layers[0].weight.dtype), context)


def memoize(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn()`` computed on the first call only: a conditioned transform's parameters, computed once."""
    memo: list[Any] = []

    def wrapped() -> Any:
        if not memo:
            memo.append(fn())
        return memo[0]

    return wrapped


def solve_increasing(
    f: Callable[[torch.Tensor], torch.Tensor],
    df: Callable[[torch.Tensor], torch.Tensor],
    lo: torch.Tensor,
    hi: torch.Tensor,
    iters: int = 60,
) -> torch.Tensor:
    """The root of an elementwise increasing ``f`` bracketed by ``[lo, hi]``, differentiable.

    Bisection without gradients finds the root ``a*``; one Newton step ``a* - f(a*) / f'(a*)`` with
    gradients then returns the same value with the implicit-function derivative of the root with
    respect to everything ``f`` depends on (at a root, that step's derivative is ``-f_theta / f_a``).
    """
    with torch.no_grad():
        lo, hi = lo.detach().clone(), hi.detach().clone()
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = f(mid) > 0
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        root = (lo + hi) / 2
    return root - f(root) / df(root)


class _AmortizedBase(ConditionalDistribution):
    """Adapts a guide module ``h -> distribution`` to Pyro's ``ConditionalDistribution``."""

    def __init__(self, guide: AmortizedGuide) -> None:
        self.guide = guide

    def condition(self, context: torch.Tensor) -> dist.TorchDistribution:
        return self.guide(context)


class FlowGuide(AmortizedGuide):
    """Base of the amortized flow guides; subclasses build ``num_flows`` conditional transforms.

    ``min_scale`` is passed to the diagonal base. Subclasses implement :meth:`make_transform`.
    """

    def __init__(
        self, feature_dim: int, latent_dim: int, num_flows: int, min_scale: float = 1e-5
    ) -> None:
        super().__init__(feature_dim, latent_dim)
        if not isinstance(num_flows, int) or isinstance(num_flows, bool) or num_flows < 1:
            raise ConfigError(f"num_flows (--flows) must be a positive integer, got {num_flows!r}")
        self.num_flows = num_flows
        min_scale = check_float(min_scale, "min_scale", self._owner)  # named after this guide
        self.base = DiagonalNormal(feature_dim, latent_dim, min_scale=min_scale)
        self.transforms = nn.ModuleList(self.make_transform(k) for k in range(num_flows))

    def make_transform(self, layer: int) -> ConditionalTransformModule:
        raise NotImplementedError

    def flow(self) -> ConditionalTransformedDistribution:
        """q(z|x) as Pyro's conditional distribution; ``.condition(h)`` gives the distribution."""
        return ConditionalTransformedDistribution(_AmortizedBase(self.base), list(self.transforms))

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.flow().condition(h)

    def conditioned_transforms(self, h: torch.Tensor) -> list[torch.distributions.Transform]:
        """The flow's transforms for context ``h``, for inspection and the change-of-variables test."""
        return list(self(h).transforms)

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """The base mean pushed through the flow: a deterministic point summary for plots."""
        z = self.base.mean(h)
        for t in self.conditioned_transforms(h):
            z = t(z)
        return z

    def prior_component(self, h: torch.Tensor) -> dist.TorchDistribution:
        return self.base(h)
