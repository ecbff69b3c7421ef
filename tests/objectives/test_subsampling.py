"""Pyro's mini-batch idiom: a data plate that subsamples, ``pyro.plate("data", N, subsample=idx)``.

Pyro scales every site in such a plate by N / B. The per-datum log weights must still be those of the
data alone (what a plain ``pyro.plate("data", B)`` gives on the same draws), and every objective's
loss N / B times its loss on the mini-batch: an unbiased estimate of the whole data set's objective.
The KL weight (beta) on the latent sites is a scale too, and must stay in the weights.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import evaluate
from pyro_vae.errors import ConfigError
from pyro_vae.objectives import OBJECTIVES, NeedsDataSize, build_objective, log_weights
from pyro_vae.objectives.base import unwrapped
from pyro_vae.objectives.importance import log_mean_exp

from .linear_gaussian import LinearGaussian, SubsampledLinearGaussian, guide_noise_z

TOTAL, B, K, SEED = 1000, 6, 5, 7


def _pair(**kwargs):
    """The same model and guide (same parameters), with a plain and with a subsampled data plate."""
    return LinearGaussian(full=False, **kwargs), SubsampledLinearGaussian(
        TOTAL, full=False, **kwargs
    )


def _seeded(fn, *args, **kwargs):
    pyro.clear_param_store()  # both modules register as "lg": start each run from an empty store
    pyro.set_rng_seed(SEED)
    return fn(*args, **kwargs)


def test_log_weights_are_those_of_the_data_alone():
    plain, sub = _pair()
    x = plain.sample_x(B)
    with torch.no_grad():
        lw_plain = _seeded(log_weights, plain.model, plain.guide, x, num_particles=K)
        lw_sub = _seeded(log_weights, sub.model, sub.guide, x, num_particles=K)
    assert lw_sub.shape == (K, B)
    assert torch.allclose(lw_sub, lw_plain, rtol=1e-5, atol=1e-5)
    # and they are the hand-written log p(x, z) - log q(z|x) at the drawn z
    lpx, lpz, lq = plain.log_terms(x, guide_noise_z(sub, x, K, SEED))
    assert torch.allclose(lw_sub, (lpx + lpz - lq).detach(), rtol=1e-5, atol=1e-5)


def test_log_likelihood_is_per_datum_under_a_subsampled_plate():
    plain, sub = _pair()
    x = plain.sample_x(B)
    ll_plain = _seeded(evaluate.log_likelihood, plain, x, 300)
    ll_sub = _seeded(evaluate.log_likelihood, sub, x, 300)
    assert torch.allclose(ll_sub, ll_plain, rtol=1e-5, atol=1e-5)
    # a few nats per point, not TOTAL / B times that
    exact = plain.log_px(x).detach()
    assert (ll_sub - exact).abs().max() < 1.0, (ll_sub, exact)


def _options(name):
    return {"alpha": 0.5} if name == "renyi" else {}


@pytest.mark.parametrize("weighting", [{}, {"beta": 0.3}])
@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_is_total_over_b_times_its_minibatch_loss(name, weighting):
    plain, sub = _pair()
    x = plain.sample_x(B)
    objective = build_objective(name, K, **weighting, **_options(name))
    if isinstance(unwrapped(objective), NeedsDataSize):
        unwrapped(objective).set_data_size(TOTAL)  # what the plan tells it; the plain plate cannot
    expected = TOTAL / B * _seeded(objective.loss, plain.model, plain.guide, x)
    assert _seeded(objective.loss, sub.model, sub.guide, x) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["iwae", "renyi", "dreg"])
def test_gradients_are_total_over_b_times_the_minibatch_gradients(name):
    plain, sub = _pair()
    x = plain.sample_x(B)
    objective = build_objective(name, K, **_options(name))
    grads = []
    for m in (plain, sub):
        m.zero_grad()
        _seeded(objective.loss_and_grads, m.model, m.guide, x)
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n, g in grads[0].items():
        assert torch.allclose(grads[1][n], TOTAL / B * g, rtol=1e-4, atol=1e-4), n


@pytest.mark.parametrize("name", ["iwae", "renyi", "dreg"])
def test_random_subsample_size_gives_the_per_datum_bound_times_total_over_b(name):
    # subsample_size=B draws the indices (and so consumes random numbers): compare with the bound
    # written out at the latents the objective draws
    sub = SubsampledLinearGaussian(TOTAL, random=True, full=False)
    x = sub.sample_x(B)
    z = guide_noise_z(sub, x, K, SEED)
    lpx, lpz, lq = sub.log_terms(x, z)
    log_w = (lpx + lpz - lq).detach()
    bound = log_mean_exp(0.5 * log_w, 0) / 0.5 if name == "renyi" else log_mean_exp(log_w, 0)
    loss = _seeded(build_objective(name, K, **_options(name)).loss, sub.model, sub.guide, x)
    assert loss == pytest.approx(-TOTAL / B * float(bound.sum()), rel=1e-5)


@pytest.mark.parametrize("name", ["elbo", "meanfield", "iwae", "renyi", "dreg"])
def test_free_bits_counts_the_whole_data_set_under_subsampling(name):
    # the hinge is added N times: N = TOTAL under the subsampled plate, where the rest of the loss
    # is TOTAL / B times the mini-batch sum; so the whole loss scales by TOTAL / B
    plain, sub = _pair(D=4, d=3)
    x = plain.sample_x(B)
    objective = build_objective(name, K, beta=0.5, free_bits=1.0, **_options(name))
    expected = TOTAL / B * _seeded(objective.loss, plain.model, plain.guide, x)
    without = (
        TOTAL
        / B
        * _seeded(
            build_objective(name, K, beta=0.5, **_options(name)).loss, plain.model, plain.guide, x
        )
    )
    assert expected > without + 1.0  # the floor binds, so the test can tell N from B
    assert _seeded(objective.loss, sub.model, sub.guide, x) == pytest.approx(expected, rel=1e-5)


def test_latent_statistics_are_per_datum_under_subsampling():
    plain, sub = _pair(D=4, d=3)
    x = plain.sample_x(B)
    stats_plain = _seeded(evaluate.latent_statistics, plain, x, 64)
    stats_sub = _seeded(evaluate.latent_statistics, sub, x, 64)
    for key in ("rate", "distortion"):
        assert stats_sub[key] == pytest.approx(stats_plain[key], rel=1e-5), key
    assert stats_sub["kl_per_dim"] == pytest.approx(stats_plain["kl_per_dim"], rel=1e-5)
    assert stats_sub["active_units"] == stats_plain["active_units"]


def test_a_model_and_guide_that_subsample_differently_are_refused():
    def model(x):
        with pyro.plate("data", TOTAL, subsample=torch.arange(x.shape[0])):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):  # not subsampled: scale 1 against the model's N / B
            pyro.sample("z", dist.Normal(x / 2, 1.0))

    x = torch.linspace(-1.0, 1.0, B)
    with pytest.raises(ConfigError, match="subsampled differently"):
        build_objective("iwae", K).loss(model, guide, x)
    with pytest.raises(ConfigError, match="subsampled differently"):
        evaluate.log_likelihood(model, x, 10, guide=guide)


@pytest.mark.parametrize("name", ["iwae", "renyi", "dreg"])
def test_a_misnamed_data_plate_is_refused_by_the_weighted_objectives(name):
    """Without a site in the plate named "data" the batch would silently be one datum."""

    loc = torch.nn.Parameter(torch.zeros(2))

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = loc

        def model(self, x):
            with pyro.plate("batch", x.shape[0]):
                z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([x.shape[0], 2]).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

        def guide(self, x):
            with pyro.plate("batch", x.shape[0]):
                pyro.sample("z", dist.Normal(self.loc, 1.0).expand([x.shape[0], 2]).to_event(1))

    pair = Pair()
    objective = build_objective(name, 2)
    with pytest.raises(ConfigError, match=r"plates are 'batch': pass data_plate=\"NAME\""):
        objective.loss(pair.model, pair.guide, torch.zeros(4, 2))
    fixed = build_objective(name, 2, data_plate="batch")
    assert math.isfinite(fixed.loss(pair.model, pair.guide, torch.zeros(4, 2)))
