"""beta-TCVAE, FactorVAE and DIP-VAE against what is known exactly: the closed-form total
correlation, mutual information and dimension-wise KL of a Gaussian q(z); the decomposition summing
to the KL; each objective reducing to the ELBO when its extra weights are off."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.errors import ConfigError
from pyro_vae.models.vae import VAE
from pyro_vae.objectives import OBJECTIVES
from pyro_vae.objectives.dipvae import dip_covariance, dip_penalty
from pyro_vae.objectives.latent import Latents
from pyro_vae.objectives.tcvae import decomposition, log_importance_weights

SIGMA_A = torch.tensor([[1.0, 0.9, 0.6], [0.9, 1.0, 0.8], [0.6, 0.8, 1.0]], dtype=torch.float64)
NOISE = 0.7


def _gaussian_draw(n: int, seed: int = 0) -> Latents:
    """q(z|x_n) = N(mu_n, s^2 I) with mu_n ~ N(0, A): q(z) = N(0, A + s^2 I) as n grows."""
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(SIGMA_A)
    mu = torch.randn(n, 3, generator=g, dtype=torch.float64) @ chol.T
    z = mu + NOISE * torch.randn(n, 3, generator=g, dtype=torch.float64)
    q = dist.Normal(mu, NOISE * torch.ones_like(mu))
    log_qz = q.log_prob(z).sum(1)
    log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(1)
    return Latents(z, q, torch.zeros(n, dtype=z.dtype), log_pz, log_qz, 1.0, None)


def _closed_forms() -> tuple[float, float, float]:
    s = SIGMA_A + NOISE**2 * torch.eye(3, dtype=torch.float64)  # Cov q(z)
    d = torch.diagonal(s)
    tc = 0.5 * (d.log().sum() - torch.logdet(s))
    mi = 0.5 * torch.logdet(s) - 3 * math.log(NOISE)  # I(z; n), z = mu + noise
    dim_kl = 0.5 * (d - 1 - d.log()).sum()
    return float(mi), float(tc), float(dim_kl)


def test_decomposition_sums_to_the_kl_on_the_same_samples():
    draw = _gaussian_draw(64)
    for estimator in ("mws", "mss"):
        mi, tc, dim_kl = decomposition(draw, 1000, estimator)
        torch.testing.assert_close(mi + tc + dim_kl, draw.log_qz - draw.log_pz)


def test_mss_at_the_full_batch_matches_the_closed_forms():
    n = 2000
    mi, tc, dim_kl = (float(t.mean()) for t in decomposition(_gaussian_draw(n), n, "mss"))
    true_mi, true_tc, true_kl = _closed_forms()
    assert true_tc > 0.3  # a correlation worth estimating
    assert tc == pytest.approx(true_tc, abs=0.05)
    assert mi == pytest.approx(true_mi, abs=0.06)
    assert dim_kl == pytest.approx(true_kl, abs=0.03)


def test_mss_on_a_minibatch_of_a_larger_data_set_matches_the_closed_form():
    # 2000 points of a data set of 20000: the other points' weights are 1/M, the own one 1/N
    mi, tc, dim_kl = decomposition(_gaussian_draw(1500, seed=3), 15000, "mss")
    assert float(tc.mean()) == pytest.approx(_closed_forms()[1], abs=0.05)


def test_mws_is_the_closed_form_offset_by_its_known_bias():
    # at a full batch (M = N) MWS weights every q(z|x_j) 1/(N M) instead of 1/N: log q(z) and each
    # log q(z_d) read log N low, so its TC reads (D - 1) log N high, and its MI log N high
    n = 2000
    mi, tc, dim_kl = (float(t.mean()) for t in decomposition(_gaussian_draw(n), n, "mws"))
    true_mi, true_tc, true_kl = _closed_forms()
    assert tc - 2 * math.log(n) == pytest.approx(true_tc, abs=0.05)
    assert mi - math.log(n) == pytest.approx(true_mi, abs=0.06)
    assert dim_kl + 3 * math.log(n) == pytest.approx(true_kl, abs=0.03)


def _vae_and_data():
    torch.manual_seed(0)
    vae = VAE((1, 4, 4), 3, hidden=(8,))
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1)).round()
    return vae, x


@pytest.mark.parametrize(
    "name, options",
    [
        ("tcvae", {"alpha": 1.0, "beta_tc": 1.0, "gamma": 1.0}),
        ("tcvae", {"alpha": 1.0, "beta_tc": 1.0, "gamma": 1.0, "estimator": "mss"}),
        ("factorvae", {"gamma": 0.0, "disc_hidden": (8,)}),
        ("dipvae", {"lambda_od": 0.0, "lambda_d": 0.0}),
        ("dipvae", {"lambda_od": 0.0, "lambda_d": 0.0, "variant": "ii"}),
    ],
)
def test_unit_weights_give_the_elbo(name, options):
    vae, x = _vae_and_data()
    objective = OBJECTIVES.build(name, num_particles=1, **options)
    if name == "tcvae":
        objective.set_data_size(500)
    pyro.set_rng_seed(3)
    got = objective.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)
    want = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert got == pytest.approx(want, rel=1e-5)


def test_weights_change_the_loss_by_their_terms():
    vae, x = _vae_and_data()
    a = OBJECTIVES.build("tcvae", num_particles=1, alpha=1.0, beta_tc=1.0, gamma=1.0)
    b = OBJECTIVES.build("tcvae", num_particles=1, alpha=1.0, beta_tc=6.0, gamma=1.0)
    a.set_data_size(500)
    b.set_data_size(500)
    pyro.set_rng_seed(4)
    draw = a.latents(vae.model, vae.guide, x)
    tc = decomposition(draw, 500, "mws")[1].sum()
    pyro.set_rng_seed(4)
    la = a.loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(4)
    lb = b.loss(vae.model, vae.guide, x)
    assert lb - la == pytest.approx(5 * float(tc), rel=1e-4)


def test_tcvae_needs_the_data_size_and_refuses_bad_options():
    vae, x = _vae_and_data()
    with pytest.raises(ConfigError, match="set_data_size"):
        OBJECTIVES.build("tcvae", num_particles=1).loss(vae.model, vae.guide, x)
    with pytest.raises(ConfigError, match="mws"):
        OBJECTIVES.build("tcvae", num_particles=1, estimator="exact")
    with pytest.raises(ConfigError, match="variant"):
        OBJECTIVES.build("dipvae", num_particles=1, variant="iii")
    with pytest.raises(ConfigError, match="takes no option"):
        OBJECTIVES.build("dipvae", num_particles=1, beta_tc=2)


def test_dip_covariance_and_penalty_by_hand():
    draw = _gaussian_draw(50, seed=5)
    mu = draw.q.mean.numpy()
    cov_i = np.cov(mu.T, bias=True)
    torch.testing.assert_close(dip_covariance(draw, "i").numpy(), cov_i)
    cov_ii = cov_i + np.diag(draw.q.variance.numpy().mean(0))
    torch.testing.assert_close(dip_covariance(draw, "ii").numpy(), cov_ii)
    c = torch.as_tensor(cov_i)
    want = 2.0 * sum(cov_i[i, j] ** 2 for i in range(3) for j in range(3) if i != j)
    want += 7.0 * sum((cov_i[i, i] - 1) ** 2 for i in range(3))
    assert float(dip_penalty(c, 2.0, 7.0)) == pytest.approx(want)


def test_factorvae_discriminator_estimates_the_total_correlation():
    """The density-ratio trick: trained to tell q(z) from the product of its marginals, the
    discriminator's mean log odds on q(z) approach TC(q) (closed form for a Gaussian q)."""
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    true_tc = -0.5 * math.log(1 - 0.8**2)  # 0.51
    chol = torch.linalg.cholesky(cov)
    torch.manual_seed(0)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x, 1e-3).to_event(1))

    objective = OBJECTIVES.build(
        "factorvae", num_particles=1, gamma=1.0, disc_hidden=(64, 64), disc_lr=1e-3
    )
    for _ in range(800):
        objective.auxiliary_step(model, guide, torch.randn(256, 2) @ chol.T)
    z = torch.randn(20000, 2) @ chol.T
    with torch.no_grad():
        estimate = float(objective.tc_logits(z).mean())
    assert estimate == pytest.approx(true_tc, abs=0.12)
    # and the state round-trips through a checkpoint's plan state
    fresh = OBJECTIVES.build(
        "factorvae", num_particles=1, gamma=1.0, disc_hidden=(64, 64), disc_lr=1e-3
    )
    fresh.load_state_dict(objective.state_dict())
    with torch.no_grad():
        assert float(fresh.tc_logits(z).mean()) == pytest.approx(estimate)


def test_the_plan_sets_the_data_size_and_steps_the_discriminator(tmp_path):
    import pyro_vae as pv
    from pyro_vae.checkpoint import load_checkpoint

    def run(objective, options, epochs=1, resume=False):
        config = pv.RunConfig(
            data=pv.DataConfig(dataset="digits"),
            model=pv.ModelConfig(latent_dim=3, hidden=(16,)),
            train=pv.TrainConfig(
                epochs=epochs, batch_size=64, objective=objective, objective_options=options
            ),
        )
        return pv.train(config, tmp_path / objective, progress=False, resume=resume)

    result = run("tcvae", {"estimator": "mss"})
    assert np.isfinite(result.history[-1]["train_elbo"])
    opts = {"disc_hidden": (16,)}
    run("factorvae", opts)
    state = load_checkpoint(tmp_path / "factorvae" / "checkpoint.pt")["plan"]["objective"]
    weights = state["discriminator"]["0.weight"]
    assert weights.shape == (16, 3) and state["optimizer"]["state"]  # D was stepped
    # resumed, the discriminator continues from its saved state
    resumed = run("factorvae", opts, epochs=2, resume=True)
    assert len(resumed.history) == 2


def test_mss_density_estimate_is_unbiased_for_the_aggregate_posterior():
    """Minibatch-stratified sampling: for a code z_i of the batch, sum_j w_ij q(z_i|x_j) has
    expectation q(z_i) = 1/N sum_n q(z_i|x_n) over batches drawn without replacement (the own
    posterior weighted 1/N). Narrow posteriors make the own term dominate, so a weight in the wrong
    place (e.g. 1/M on the own posterior) is off by far."""
    n, b = 200, 10
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = mu + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    log_q = dist.Normal(mu, 0.3).log_prob(z.unsqueeze(1)).sum(2)  # [i, j] = log q(z_i | x_j)
    exact = torch.logsumexp(log_q, 1) - math.log(n)
    logw = log_importance_weights(b, n, "mss").to(log_q)
    ratio, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)
    for _ in range(4000):
        idx = torch.randperm(n, generator=g)[:b]
        est = torch.logsumexp(logw + log_q[idx][:, idx], 1)
        ratio.index_add_(0, idx, (est - exact[idx]).exp())
        count.index_add_(0, idx, torch.ones(b, dtype=torch.float64))
    mean_ratio = float((ratio / count).mean())
    assert mean_ratio == pytest.approx(1.0, abs=0.05)
    rows = logw.exp().sum(1)
    torch.testing.assert_close(rows, torch.ones_like(rows))


def test_options_are_typed_from_the_signatures_and_unknown_ones_refused():
    assert OBJECTIVES.options("tcvae", {"beta_tc": "6", "estimator": "mss"}) == {
        "beta_tc": 6.0,
        "estimator": "mss",
    }
    assert OBJECTIVES.options("factorvae", {"disc_hidden": "64,32", "gamma": "10"}) == {
        "disc_hidden": (64, 32),
        "gamma": 10.0,
    }
    assert OBJECTIVES.options("dipvae", {"lambda_d": "none", "variant": "ii"}) == {
        "lambda_d": None,
        "variant": "ii",
    }
    for name in ("tcvae", "factorvae", "dipvae"):
        with pytest.raises(ConfigError, match="takes no option"):
            OBJECTIVES.options(name, {"lambda": "1"})
    with pytest.raises(ConfigError, match="finite number"):
        OBJECTIVES.options("tcvae", {"alpha": "nan"})
