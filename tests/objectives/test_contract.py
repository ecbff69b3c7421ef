"""The contract every registered objective keeps on the VAE, so a new objective is tested for free."""

from __future__ import annotations

import math

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI

from pyro_vae.models.vae import VAE
from pyro_vae.objectives import OBJECTIVES, build_objective


def _vae_and_data():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), 3, hidden=(8,))
    x = torch.rand(10, 1, 4, 4, generator=torch.Generator().manual_seed(1)).round()
    return vae, x


@pytest.mark.parametrize("particles", [1, 3])
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_objective_contract(name, particles):
    vae, x = _vae_and_data()
    objective = build_objective(name, particles)
    # a finite loss, as a float
    loss = objective.loss(vae.model, vae.guide, x)
    assert isinstance(loss, float) and math.isfinite(loss)
    # gradients reach every parameter, and are finite
    vae.zero_grad()
    loss = objective.loss_and_grads(vae.model, vae.guide, x)
    assert math.isfinite(loss)
    for n, p in vae.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n
    # SVI steps with it, and so does its KL-weighted form
    for obj in (objective, build_objective(name, particles, beta=0.5, kl_anneal=2)):
        pyro.clear_param_store()
        svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), obj)
        getattr(obj, "set_epoch", lambda e: None)(1)
        assert all(math.isfinite(svi.step(x)) for _ in range(2))
