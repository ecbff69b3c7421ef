"""The bound family against the closed-form log p(x) of a linear-Gaussian model."""

from __future__ import annotations

import pyro
import pytest
import torch

from pyro_vae import evaluate
from pyro_vae.errors import ConfigError
from pyro_vae.objectives import build_objective, log_weights
from pyro_vae.objectives.importance import log_mean_exp

from .linear_gaussian import LinearGaussian


def test_importance_sampled_log_likelihood_converges_to_the_closed_form():
    lg = LinearGaussian().set_perturbed_posterior()
    x = lg.sample_x(6)
    exact = lg.log_px(x).detach()
    est = evaluate.log_likelihood(lg, x, 20000, max_elements=6 * 3 * 3000)  # 7 chunks
    assert est.shape == (6,)
    assert torch.allclose(est, exact, atol=0.01), (est, exact)
    # few samples: a clearly looser (lower) estimate, so the test can tell them apart
    few = evaluate.log_likelihood(lg, x, 1)
    assert (exact - few).mean() > 0.1


def test_bounds_are_ordered_below_log_px_with_a_suboptimal_guide():
    lg = LinearGaussian().set_perturbed_posterior(shift=1.0, inflate=1.8)
    x = lg.sample_x(8)
    exact = lg.log_px(x).detach()
    pyro.set_rng_seed(3)
    with torch.no_grad():
        lw = log_weights(lg.model, lg.guide, x, num_particles=20000)  # (K, N)
    elbo = lw.mean(0)
    iwae5 = log_mean_exp(lw.reshape(-1, 5, lw.shape[1]), 1).mean(0)
    iwae50 = log_mean_exp(lw.reshape(-1, 50, lw.shape[1]), 1).mean(0)
    # averaged over the batch (the expectations are per datum; the margins are many s.e. wide)
    e, i5, i50, lp = (t.mean().item() for t in (elbo, iwae5, iwae50, exact))
    assert e + 0.05 < i5 < i50 < lp, (e, i5, i50, lp)
    # and per datum, where the gaps are visible
    assert (elbo <= iwae5 + 1e-3).all() and (iwae50 <= exact + 0.02).all()


@pytest.mark.parametrize(
    "name,options",
    [
        ("elbo", {}),
        ("jit-elbo", {}),
        ("meanfield", {}),
        ("iwae", {}),
        ("dreg", {}),
        ("renyi", {"alpha": 0.5}),
        ("renyi", {"alpha": -1.0}),
    ],
)
def test_every_bound_equals_log_px_under_the_exact_posterior(name, options):
    lg = LinearGaussian().set_exact_posterior()
    x = lg.sample_x(5)
    exact = lg.log_px(x).sum().item()
    for k in (7,) if options.get("alpha") else (1, 7):  # alpha does nothing at K=1: refused
        loss = build_objective(name, k, **options).loss(lg.model, lg.guide, x)
        assert loss == pytest.approx(-exact, abs=1e-3)
    assert torch.allclose(evaluate.log_likelihood(lg, x, 100), lg.log_px(x).detach(), atol=1e-4)


def test_iwae_loss_estimates_its_bound_and_tightens_with_k():
    lg = LinearGaussian()
    x = lg.sample_x(8)
    exact = -lg.log_px(x).sum().item()

    def mean_loss(k):
        obj = build_objective("iwae", k)
        return sum(obj.loss(lg.model, lg.guide, x) for _ in range(100)) / 100

    l1, l50 = mean_loss(1), mean_loss(50)
    assert exact < l50 < l1


def test_an_alpha_that_does_nothing_at_one_particle_is_refused():
    with pytest.raises(ConfigError, match="has no effect with one particle"):
        build_objective("renyi", 1, alpha=0.5)
    assert build_objective("renyi", 1).alpha == 0.0  # the default is the ELBO at K=1 too
