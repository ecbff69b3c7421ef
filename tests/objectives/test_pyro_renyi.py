"""Our ``iwae`` and ``renyi`` against Pyro's own ``RenyiELBO``, on a model with local latents.

With ``vectorize_particles=True`` and the same ``max_plate_nesting`` Pyro's RenyiELBO keeps the data
plate (a plate holding every site) as a per-datum dim, so on the same draws it gives our loss and our
gradients. Where the two differ is listed in :mod:`pyro_vae.objectives.importance`; one case, the
subsampled data plate, is checked here too.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import RenyiELBO

from pyro_vae.objectives import OBJECTIVES

from .linear_gaussian import LinearGaussian, SubsampledLinearGaussian

K, SEED = 6, 5


def _loss_and_grads(objective, lg, x):
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    loss = objective.loss(lg.model, lg.guide, x)
    lg.zero_grad()
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    value = objective.loss_and_grads(lg.model, lg.guide, x)
    return loss, value, {n: p.grad.clone() for n, p in lg.named_parameters()}


@pytest.mark.parametrize(
    "name,alpha", [("iwae", 0.0), ("renyi", 0.0), ("renyi", 0.5), ("renyi", -1.0)]
)
def test_pyro_renyi_elbo_gives_our_loss_and_gradients_with_local_latents(name, alpha):
    lg = LinearGaussian()  # a deliberately sub-optimal guide, with a full covariance
    x = lg.sample_x(7)
    ours = OBJECTIVES.build(name, num_particles=K, **({"alpha": alpha} if name == "renyi" else {}))
    pyros = RenyiELBO(alpha=alpha, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    loss, value, grads = _loss_and_grads(ours, lg, x)
    ref_loss, ref_value, ref_grads = _loss_and_grads(pyros, lg, x)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    assert value == pytest.approx(ref_value, rel=1e-6)
    for n, g in ref_grads.items():
        assert g.abs().sum() > 0, n
        assert torch.allclose(grads[n], g, rtol=1e-5, atol=1e-5), n
    # a per-datum bound: the batch summed as one datum would be a different (looser) number
    pyro.set_rng_seed(SEED)
    lw = ours.log_weights(lg.model, lg.guide, x).detach()
    assert lw.shape == (K, 7)
    whole_batch = -torch.logsumexp(lw.sum(1), 0).item()
    assert abs(whole_batch - loss) > 1.0


def test_under_a_subsampled_plate_pyro_keeps_the_scale_in_the_weights_and_we_do_not():
    total, n = 100, 5
    plain = LinearGaussian(full=False)
    sub = SubsampledLinearGaussian(total, full=False)
    x = plain.sample_x(n)
    pyros = RenyiELBO(alpha=0.0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    ours = OBJECTIVES.build("iwae", num_particles=K)
    plain_loss = _loss_and_grads(ours, plain, x)[0]
    assert _loss_and_grads(ours, sub, x)[0] == pytest.approx(total / n * plain_loss, rel=1e-5)
    # Pyro weighs w^(total/n) inside the log-mean-exp: not total/n times the mini-batch bound
    assert _loss_and_grads(pyros, sub, x)[0] != pytest.approx(total / n * plain_loss, rel=1e-3)


class GlobalAndLocal(torch.nn.Module):
    """A global offset g shared by the batch and one local z per datum:
    g ~ N(0, 1), z_n ~ N(0, 1), x_n ~ N(w z_n + g, 0.7^2); q(g) = N(m, s^2), q(z_n|x_n) = N(a x_n, 0.8^2).
    """

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.9))
        self.a = torch.nn.Parameter(torch.tensor(0.4))
        self.m = torch.nn.Parameter(torch.tensor(0.2))
        self.s = torch.nn.Parameter(torch.tensor(0.6))

    def model(self, x):
        pyro.module("gl", self)
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(self.w * z + g, 0.7), obs=x)

    def guide(self, x):
        pyro.module("gl", self)
        pyro.sample("g", dist.Normal(self.m, self.s))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, 0.8))


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_with_a_global_latent_both_weigh_the_batch_as_one_datum(alpha):
    gl = GlobalAndLocal()
    x = torch.linspace(-1.5, 2.0, 6)
    ours = OBJECTIVES.build("renyi", num_particles=K, alpha=alpha)
    pyros = RenyiELBO(alpha=alpha, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    loss, value, grads = _loss_and_grads(ours, gl, x)
    ref_loss, ref_value, ref_grads = _loss_and_grads(pyros, gl, x)
    assert loss == pytest.approx(ref_loss, rel=1e-6) and value == pytest.approx(ref_value, rel=1e-6)
    for n, g in ref_grads.items():
        assert torch.allclose(grads[n], g, rtol=1e-5, atol=1e-5), n
