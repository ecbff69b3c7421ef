"""The importance-weighted bounds on flow guides and hierarchical models, through their traces."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.transforms import affine_autoregressive

from pyro_vae import evaluate
from pyro_vae.guides.base import AmortizedGuide
from pyro_vae.models.vae import VAE
from pyro_vae.objectives import build_objective

from .test_references import Hierarchical


class FlowGuide(AmortizedGuide):
    """q(z|x): a diagonal Gaussian pushed through one affine autoregressive flow (a TransformedDistribution)."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__(feature_dim, latent_dim)
        self.loc = torch.nn.Linear(feature_dim, latent_dim)
        self.flow = affine_autoregressive(latent_dim, hidden_dims=[8])

    def forward(self, h):
        base = dist.Normal(self.loc(h), 1.0).to_event(1)
        return dist.TransformedDistribution(base, [self.flow])


def _flow_vae():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), 3, hidden=(8,), guide=FlowGuide(8, 3))
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(1)).round()
    return vae, x


def _loss(obj, m, x, seed=5):
    pyro.set_rng_seed(seed)
    return obj.loss(m.model, m.guide, x)


@pytest.mark.parametrize("name", ["iwae", "renyi", "dreg"])
def test_flow_guides_get_every_bound(name):
    vae, x = _flow_vae()
    obj = build_objective(name, 4, **({"alpha": 0.5} if name == "renyi" else {}))
    vae.zero_grad()
    assert math.isfinite(obj.loss_and_grads(vae.model, vae.guide, x))
    flow_params = list(vae.q.flow.parameters())
    assert flow_params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in flow_params)


def test_flow_guide_dreg_value_is_iwae_and_evaluation_works():
    vae, x = _flow_vae()
    assert _loss(build_objective("dreg", 4), vae, x) == pytest.approx(
        _loss(build_objective("iwae", 4), vae, x), rel=1e-6
    )
    stats = evaluate.latent_statistics(vae, x, 8)  # MC KL and MC means: no closed forms here
    assert math.isfinite(stats["rate"]) and stats["kl_per_dim"] == []
    ll = evaluate.log_likelihood(vae, x, 64)
    assert ll.shape == (6,) and torch.isfinite(ll).all()


def test_hierarchical_model_bounds_per_data_point():
    h = Hierarchical()
    x = torch.tensor([0.3, -1.2, 2.0, 0.5])
    iwae = _loss(build_objective("iwae", 6), h, x)
    assert _loss(build_objective("renyi", 6, alpha=0.0), h, x) == pytest.approx(iwae, rel=1e-6)
    assert _loss(build_objective("dreg", 6), h, x) == pytest.approx(iwae, rel=1e-6)
    # log p(x) in closed form: x ~ N(0, 1 + 1 + sx^2), independent over data points
    sx = float(h.sx)
    exact = torch.distributions.Normal(0.0, math.sqrt(2 + sx**2)).log_prob(x)
    est = evaluate.log_likelihood(h, x, 20000)
    assert torch.allclose(est, exact, atol=0.02)
    assert -iwae < float(exact.sum())
