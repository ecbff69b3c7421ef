"""Beta, KL annealing and free bits change the loss exactly as their formulas say."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from pyro_vae.errors import ConfigError
from pyro_vae.objectives import KLWeighted, build_objective
from pyro_vae.objectives.importance import log_mean_exp

from .chain import Chain
from .linear_gaussian import LinearGaussian, guide_noise_z

K, SEED = 5, 7


def _loss(name, lg, x, **options):
    pyro.set_rng_seed(SEED)
    return build_objective(name, K, **options).loss(lg.model, lg.guide, x)


def _analytic_kl(lg, x):
    """KL(q(z|x) || N(0, I)) per datum and dimension, (N, d)."""
    return kl_divergence(Normal(x @ lg.A.T + lg.c, lg.L.diagonal()), Normal(0.0, 1.0)).detach()


@pytest.mark.parametrize("beta", [0.0, 0.25, 3.0])
def test_beta_weights_the_latent_terms_of_every_objective(beta):
    lg = LinearGaussian(full=False)
    x = lg.sample_x(6)
    z = guide_noise_z(lg, x, K, SEED)
    with torch.no_grad():
        lpx, lpz, lq = lg.log_terms(x, z)
        kl = _analytic_kl(lg, x).sum(-1)
    expected = {
        "elbo": -(lpx + beta * (lpz - lq)).mean(0).sum(),
        "iwae": -log_mean_exp(lpx + beta * (lpz - lq), 0).sum(),
        "dreg": -log_mean_exp(lpx + beta * (lpz - lq), 0).sum(),
        "meanfield": -(lpx.mean(0) - beta * kl).sum(),
    }
    for name, ref in expected.items():
        assert _loss(name, lg, x, beta=beta) == pytest.approx(float(ref), rel=1e-5), name


def test_kl_annealing_is_linear_from_the_start_weight_to_beta():
    lg = LinearGaussian(full=False)
    x = lg.sample_x(6)
    obj = build_objective("elbo", K, beta=2.0, kl_anneal=4, kl_anneal_start=0.4)
    assert isinstance(obj, KLWeighted)
    weights = []
    for epoch in range(7):
        obj.set_epoch(epoch)
        weights.append(obj.kl_weight)
    assert weights == pytest.approx([0.4, 0.8, 1.2, 1.6, 2.0, 2.0, 2.0])
    obj.set_epoch(1)
    pyro.set_rng_seed(SEED)
    assert obj.loss(lg.model, lg.guide, x) == pytest.approx(
        _loss("elbo", lg, x, beta=0.8), rel=1e-6
    )
    # the default start is 0: the first epoch is pure reconstruction
    obj0 = build_objective("elbo", K, kl_anneal=10)
    obj0.set_epoch(0)
    z = guide_noise_z(lg, x, K, SEED)
    pyro.set_rng_seed(SEED)
    with torch.no_grad():
        recon = -lg.log_terms(x, z)[0].mean(0).sum()
    assert obj0.loss(lg.model, lg.guide, x) == pytest.approx(float(recon), rel=1e-6)


def test_the_trainer_anneals_through_set_epoch():
    from pyro_vae import ModelConfig, RunConfig, TrainConfig, train
    from pyro_vae.data import Dataset

    seen = []
    original = KLWeighted.set_epoch

    def spy(self, epoch):
        original(self, epoch)
        seen.append(self.kl_weight)

    KLWeighted.set_epoch = spy
    try:
        g = torch.Generator().manual_seed(0)
        tiny = Dataset("tiny", *(torch.rand(n, 1, 4, 4, generator=g).round() for n in (64, 16)))
        config = RunConfig(
            model=ModelConfig(latent_dim=2, hidden=(8,)),
            train=TrainConfig(
                epochs=3,
                batch_size=32,
                objective="renyi",
                particles=2,
                objective_options={"alpha": 0.5},
                kl_anneal=2,
                free_bits=0.1,
                device="cpu",
            ),
        )
        result = train(config, progress=False, dataset=tiny)
    finally:
        KLWeighted.set_epoch = original
    assert seen == pytest.approx([0.0, 0.5, 1.0])
    assert all(math.isfinite(r["train_elbo"]) for r in result.history)


def test_free_bits_floors_the_kl_of_each_dimension():
    lg = LinearGaussian(D=4, d=3, full=False)
    x = lg.sample_x(6)
    z = guide_noise_z(lg, x, K, SEED)
    kl_d = _analytic_kl(lg, x).mean(0)  # (d,), averaged over the batch
    lam = float(kl_d.sort().values[1:].mean())  # a floor between the dimensions' KLs
    assert (kl_d < lam).any() and (kl_d > lam).any()
    n = x.shape[0]
    with torch.no_grad():
        recon = lg.log_terms(x, z)[0].mean(0).sum()
    # meanfield: exactly -sum_n E log p(x_n|z) + N sum_d max(lambda, KL_d)
    expected = -recon + n * torch.clamp(kl_d, min=lam).sum()
    assert _loss("meanfield", lg, x, free_bits=lam) == pytest.approx(float(expected), rel=1e-5)
    # any objective: the loss gains N sum_d max(0, lambda - KL_d), times the KL weight
    hinge = float(n * torch.relu(lam - kl_d).sum())
    for name in ("elbo", "iwae"):
        plain = _loss(name, lg, x)
        assert _loss(name, lg, x, free_bits=lam) == pytest.approx(plain + hinge, rel=1e-5)
        scaled = _loss(name, lg, x, beta=0.5)
        assert _loss(name, lg, x, beta=0.5, free_bits=lam) == pytest.approx(
            scaled + 0.5 * hinge, rel=1e-5
        )


def test_free_bits_stops_the_kl_gradient_of_dimensions_below_the_floor():
    lg = LinearGaussian(full=False)
    x = lg.sample_x(6)
    obj = build_objective("meanfield", 1, free_bits=100.0)  # every dimension under the floor
    lg.zero_grad()
    pyro.set_rng_seed(SEED)
    obj.loss_and_grads(lg.model, lg.guide, x)
    # the reference: the gradient of the reconstruction term alone, on the same noise
    z = guide_noise_z(lg, x, 1, SEED).squeeze(0)
    eps = ((z - (x @ lg.A.T + lg.c)) / lg.L.diagonal()).detach()
    zr = x @ lg.A.T + lg.c + lg.L.diagonal() * eps
    ref = torch.autograd.grad(-lg.log_terms(x, zr)[0].sum(), [lg.A, lg.c, lg.L])
    for p, r in zip((lg.A, lg.c, lg.L), ref):
        assert torch.allclose(p.grad, r, atol=1e-5)


def test_free_bits_needs_a_factorised_guide_and_an_interpretable_objective():
    lg = LinearGaussian(full=True)  # a full-covariance guide has no per-dimension KL
    x = lg.sample_x(4)
    with pytest.raises(ConfigError, match="factorise"):
        build_objective("elbo", 1, free_bits=0.5).loss(lg.model, lg.guide, x)
    with pytest.raises(ConfigError, match="JIT"):
        build_objective("jit-elbo", 1, free_bits=0.5)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"beta": -1.0}, "--beta"),
        ({"free_bits": float("nan")}, "--free-bits"),
        ({"kl_anneal": -2}, "--kl-anneal"),
        ({"kl_anneal_start": 0.1}, "needs --kl-anneal"),
        ({"alpha": 0.5}, "takes no option 'alpha'"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        build_objective("iwae", 1, **options)


def test_no_weighting_options_give_the_plain_objective():
    assert not isinstance(build_objective("elbo", 1), KLWeighted)
    assert not isinstance(build_objective("elbo", 1, beta=1.0, free_bits=0.0), KLWeighted)


def test_cli_flags_map_to_training_and_objective_options():
    from pyro_vae.cli import train_config
    from pyro_vae.objectives import objective_for

    cfg = train_config(
        ["--objective", "renyi", "-k", "2", "--alpha", "0.5", "--beta", "2", "--kl-anneal", "3"]
        + ["--kl-anneal-start", "0.1", "--free-bits", "0.25", "--objective-opt", "data_plate=data"]
    )
    assert cfg.train.objective_options == {"alpha": 0.5, "data_plate": "data"}
    t = cfg.train
    assert (t.beta, t.kl_anneal, t.kl_anneal_start, t.free_bits) == (2.0, 3, 0.1, 0.25)
    obj = objective_for(t)
    assert isinstance(obj, KLWeighted) and obj.inner.alpha == 0.5 and obj.beta == 2.0


def test_kl_weighting_is_not_an_objective_option():
    from pyro_vae.cli import train_config

    with pytest.raises(ConfigError, match=r"beta is a training option of its own \(--beta\)"):
        train_config(["--objective-opt", "beta=2"])


def test_free_bits_uses_the_monte_carlo_kl_below_a_parent_drawn_from_the_site():
    # the closed-form KL(q(z1|x) || p(z1|z2)) at the drawn z2 is about 60 nats, the ELBO's term about -2
    from pyro_vae.objectives.kl import SiteRecorder, closed_form_kl_sites, free_bits_penalty

    chain = Chain()
    model, guide = chain.model, chain.guide
    assert closed_form_kl_sites(["z2", "z1"], ["z1", "z2"]) == {"z2"}
    x = torch.zeros(20000)
    pyro.set_rng_seed(SEED)
    rg, rm = SiteRecorder(), SiteRecorder()
    trace = pyro.poutine.trace(rg.wrap(guide)).get_trace(x)
    pyro.poutine.replay(rm.wrap(model), trace=trace)(x)
    # with a floor of 60 nats per dimension the penalty is N * (60 - KL_z1 + 60 - KL_z2)
    penalty = float(free_bits_penalty(rg.sites, rm.sites, 60.0)) / x.shape[0]
    z1 = rg.sites["z1"]["value"]
    kl_z2 = kl_divergence(Normal(z1, 0.1), Normal(0.0, 1.0)).mean()
    mc_z1 = (
        Normal(0.0, 1.0).log_prob(z1) - Normal(rm.sites["z2"]["value"], 0.1).log_prob(z1)
    ).mean()
    assert penalty == pytest.approx(120.0 - float(kl_z2) - float(mc_z1), rel=1e-4)
    assert float(mc_z1) < 5.0  # not the ~60 nats of the closed form at the drawn z2
