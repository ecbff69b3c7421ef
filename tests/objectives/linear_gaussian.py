"""A linear-Gaussian model with a closed-form log p(x), written as a Pyro model/guide pair.

Generative process, for each datum in the plate ``data``::

    z ~ N(0, I_d)
    x | z ~ N(W z + b, s^2 I_D)          so that   x ~ N(b, W W^T + s^2 I_D)

Guide: q(z|x) = N(A x + c, L L^T) with L lower-triangular (``full=True``) or diagonal. The exact
posterior is N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1, reachable with ``full=True``.

:class:`SubsampledLinearGaussian` is the same pair written with Pyro's mini-batch idiom, x a
mini-batch of a data set of ``total`` points: ``pyro.plate("data", total, subsample=idx)``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import MultivariateNormal, Normal


class LinearGaussian(nn.Module):
    def __init__(
        self,
        D: int = 3,
        d: int = 2,
        s: float = 0.7,
        full: bool = True,
        seed: int = 0,
        plate: str = "data",
    ):
        super().__init__()
        self.plate_name = plate
        g = torch.Generator().manual_seed(seed)
        self.D, self.d, self.s, self.full = D, d, s, full
        self.W = nn.Parameter(torch.randn(D, d, generator=g))
        self.b = nn.Parameter(torch.randn(D, generator=g))
        # a deliberately sub-optimal guide
        self.A = nn.Parameter(0.3 * torch.randn(d, D, generator=g))
        self.c = nn.Parameter(0.3 * torch.randn(d, generator=g))
        self.L = nn.Parameter(torch.eye(d) * 0.8 + 0.1 * torch.randn(d, d, generator=g).tril(-1))

    # -- Pyro model/guide ---------------------------------------------------------------------
    def data_plate(self, x: torch.Tensor) -> pyro.plate:
        return pyro.plate(self.plate_name, x.shape[0])

    def model(self, x: torch.Tensor) -> None:
        pyro.module("lg", self)
        with self.data_plate(x):
            z = pyro.sample(
                "z", dist.Normal(torch.zeros(self.d), 1.0, validate_args=False).to_event(1)
            )
            pyro.sample(
                "x",
                dist.Normal(z @ self.W.T + self.b, self.s, validate_args=False).to_event(1),
                obs=x,
            )

    def q(self, x: torch.Tensor) -> dist.TorchDistribution:
        loc = x @ self.A.T + self.c
        if self.full:
            return dist.MultivariateNormal(loc, scale_tril=self.tril(), validate_args=False)
        return dist.Normal(loc, self.L.diagonal(), validate_args=False).to_event(1)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("lg", self)
        with self.data_plate(x):
            pyro.sample("z", self.q(x))

    def tril(self) -> torch.Tensor:
        return self.L.tril()

    # -- closed forms ---------------------------------------------------------------------------
    def log_px(self, x: torch.Tensor) -> torch.Tensor:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.D)
        return MultivariateNormal(self.b, cov).log_prob(x)

    @torch.no_grad()
    def set_exact_posterior(self) -> LinearGaussian:
        assert self.full, "the exact posterior has a full covariance"
        S = torch.linalg.inv(torch.eye(self.d) + self.W.T @ self.W / self.s**2)
        self.A.copy_(S @ self.W.T / self.s**2)
        self.c.copy_(-self.A @ self.b)
        self.L.copy_(torch.linalg.cholesky(S))
        return self

    @torch.no_grad()
    def set_perturbed_posterior(self, shift: float = 0.3, inflate: float = 1.3) -> LinearGaussian:
        """The exact posterior with its mean shifted by ``shift`` posterior standard deviations and
        its scale inflated: sub-optimal, but wider than the posterior, so importance sampling
        converges fast."""
        self.set_exact_posterior()
        self.c.add_(shift * self.L.diagonal())
        self.L.mul_(inflate)
        return self

    @torch.no_grad()
    def sample_x(self, n: int, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.d, generator=g)
        return z @ self.W.T + self.b + self.s * torch.randn(n, self.D, generator=g)

    def log_terms(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Hand-written log p(x|z), log p(z), log q(z|x), each ``z.shape[:-1]``."""
        lpx = Normal(z @ self.W.T + self.b, self.s).log_prob(x).sum(-1)
        lpz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        loc = x @ self.A.T + self.c
        if self.full:
            lq = MultivariateNormal(loc, scale_tril=self.tril()).log_prob(z)
        else:
            lq = Normal(loc, self.L.diagonal()).log_prob(z).sum(-1)
        return lpx, lpz, lq


class SubsampledLinearGaussian(LinearGaussian):
    """:class:`LinearGaussian` under Pyro's mini-batch idiom: x holds B of ``total`` data points and
    the plate says so, ``pyro.plate("data", total, subsample=idx)`` (``subsample_size=B`` with
    ``random=True``, which draws the indices), so Pyro scales every site by ``total / B``. Built with
    the same ``seed`` it has the parameters of ``LinearGaussian``."""

    def __init__(self, total: int = 1000, random: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.total, self.random = total, random

    def data_plate(self, x: torch.Tensor) -> pyro.plate:
        if self.random:
            return pyro.plate(self.plate_name, self.total, subsample_size=x.shape[0])
        idx = torch.arange(x.shape[0]) * 7 + 3  # which B of the total: any will do
        return pyro.plate(self.plate_name, self.total, subsample=idx)


def guide_noise_z(lg: LinearGaussian, x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    """The latents ``(K, N, d)`` a vectorised objective draws after ``pyro.set_rng_seed(seed)``."""
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        tr = pyro.poutine.trace(pyro.plate("particles", K, dim=-2)(lg.guide)).get_trace(x)
    return tr.nodes["z"]["value"]
