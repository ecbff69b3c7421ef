"""A chain of latents whose lower layer's prior is narrow around a parent the guide draws from it:

    z2 ~ N(0, 1),  z1 ~ N(z2, 0.1^2),  x ~ N(z1, 1);   q(z1|x) = N(x/2, 1),  q(z2|z1) = N(z1, 0.1^2).

The closed-form KL(q(z1|x) || p(z1|z2)) at a drawn z2 is far from the ELBO's term for z1 (tens of
nats against a few), so it tells the two apart.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch


class Chain(torch.nn.Module):
    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros_like(x), 1.0))
            z1 = pyro.sample("z1", dist.Normal(z2, 0.1))
            pyro.sample("x", dist.Normal(z1, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(x / 2, 1.0))
            pyro.sample("z2", dist.Normal(z1, 0.1))
