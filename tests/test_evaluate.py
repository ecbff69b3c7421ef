"""Evaluation: importance-sampled log p(x), IWAE-k, rate/distortion, per-dimension KL, active units."""

from __future__ import annotations

import json
import math
import types

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import VAE, evaluate
from pyro_vae.errors import ConfigError
from pyro_vae.objectives.importance import importance_traces
from tests.objectives.chain import Chain
from tests.objectives.linear_gaussian import LinearGaussian


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


def test_chunking_does_not_change_the_estimate():
    lg = LinearGaussian().set_perturbed_posterior()
    x = lg.sample_x(5)
    exact = lg.log_px(x).detach()
    one_chunk = evaluate.log_likelihood(lg, x, 4000)
    tiny_chunks = evaluate.log_likelihood(lg, x, 4000, max_elements=2 * 3 * 500, batch_size=2)
    for est in (one_chunk, tiny_chunks):
        assert est.shape == (5,) and torch.allclose(est, exact, atol=0.03)
    # the IWAE-k bound is the same estimator with k samples: below log p(x) in expectation
    assert evaluate.iwae_bound(lg, x.repeat(400, 1), 2).mean() < exact.mean() - 0.01


def test_rate_distortion_and_per_dimension_kl_match_closed_forms():
    lg = LinearGaussian(D=4, d=3, full=False)
    x = lg.sample_x(7)
    stats = evaluate.latent_statistics(lg, x, 4000)
    with torch.no_grad():
        m, sd = x @ lg.A.T + lg.c, lg.L.diagonal()
        kl = torch.distributions.kl_divergence(
            torch.distributions.Normal(m, sd), dist.Normal(0.0, 1.0)
        )
        # E_q log N(x; W z + b, s^2 I) in closed form
        resid = ((x - m @ lg.W.T - lg.b) ** 2).sum(-1) + (lg.W**2 * sd**2).sum()
        e_log_px = -0.5 * lg.D * math.log(2 * math.pi * lg.s**2) - resid / (2 * lg.s**2)
    assert stats["rate"] == pytest.approx(float(kl.sum(-1).mean()), rel=1e-5)
    assert stats["kl_per_dim"] == pytest.approx(kl.mean(0).tolist(), rel=1e-5)
    assert sum(stats["kl_per_dim"]) == pytest.approx(stats["rate"], rel=1e-5)
    assert stats["distortion"] == pytest.approx(float(-e_log_px.mean()), rel=0.01)


def test_active_units_count_latent_means_that_vary_with_x():
    lg = LinearGaussian(D=3, d=2, full=False)
    with torch.no_grad():
        lg.A[1].zero_()  # E_q[z_2 | x] = c_2 for every x: an inactive unit
        lg.A[0].mul_(10.0)
    x = lg.sample_x(50)
    assert evaluate.latent_statistics(lg, x, 2)["active_units"] == 1
    assert evaluate.latent_statistics(lg, x, 2, threshold=-1.0)["active_units"] == 2


def test_a_latent_shared_by_the_batch_has_no_per_datum_likelihood():
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(g, 1.0), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    m = torch.nn.Module()
    m.model, m.guide = model, guide
    with pytest.raises(ConfigError, match="plate named 'data'") as e:
        evaluate.log_likelihood(m, torch.zeros(3), 4)
    assert "latent site 'g'" in str(e.value) and "\n" not in str(e.value)


def test_a_data_plate_of_another_name_is_named_with_the_option_that_fixes_it():
    lg = LinearGaussian(plate="batch").set_perturbed_posterior()
    x = lg.sample_x(4)
    with pytest.raises(ConfigError) as e:
        evaluate.log_likelihood(lg, x, 8)
    message = str(e.value)
    assert "'batch'" in message and 'data_plate="NAME"' in message and "\n" not in message
    assert "shared by the whole batch" not in message
    # and the option does fix it
    est = evaluate.log_likelihood(lg, x, 4000, data_plate="batch")
    assert torch.allclose(est, lg.log_px(x).detach(), atol=0.05)


def test_a_model_without_plates_is_told_to_add_one():
    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.sample("z", dist.Normal(x / 2, 1.0).to_event(1))

    with pytest.raises(ConfigError, match="declares no plate.*data_plate"):
        evaluate.log_likelihood(model, torch.zeros(3), 4, guide=guide)


def test_a_model_that_subsamples_the_batch_is_told_so():
    # both subsample 3 of the 6 rows of x: three log weights for six rows
    def model(x):
        with pyro.plate("data", x.shape[0], subsample_size=3) as idx:
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        with pyro.plate("data", x.shape[0], subsample_size=3) as idx:
            pyro.sample("z", dist.Normal(x[idx] / 2, 1.0))

    with pytest.raises(ConfigError, match="holds 3 data points.*the batch has 6 rows") as e:
        evaluate.log_likelihood(model, torch.zeros(6), 4, guide=guide)
    assert "shared by the whole batch" not in str(e.value)


def _linear_gaussian_functions(lg: LinearGaussian):
    """``lg`` written as the plain Pyro functions a Pyro user has: no module, no methods."""
    W, b, s = lg.W.detach(), lg.b.detach(), lg.s
    A, c, L = lg.A.detach(), lg.c.detach(), lg.tril().detach()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(W.shape[1]), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + b, s).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(x @ A.T + c, scale_tril=L))

    return model, guide


def test_log_likelihood_of_plain_model_and_guide_functions():
    lg = LinearGaussian().set_perturbed_posterior()
    x = lg.sample_x(5)
    exact = lg.log_px(x).detach()
    model, guide = _linear_gaussian_functions(lg)
    est = evaluate.log_likelihood(model, x, 4000, guide=guide)
    assert est.shape == (5,) and torch.allclose(est, exact, atol=0.03)
    # the same draws as through the module's methods
    pyro.set_rng_seed(3)
    a = evaluate.log_likelihood(model, x, 50, guide=guide)
    pyro.set_rng_seed(3)
    b = evaluate.log_likelihood(lg, x, 50)
    assert torch.allclose(a, b, atol=1e-5)
    # IWAE-k: the same estimator with k samples
    pyro.set_rng_seed(3)
    assert torch.allclose(evaluate.iwae_bound(model, x, 50, guide=guide), b, atol=1e-5)
    # and an object that merely has model and guide attributes
    pair = types.SimpleNamespace(model=model, guide=guide)
    assert torch.allclose(evaluate.log_likelihood(pair, x, 4000), exact, atol=0.03)
    with pytest.raises(ConfigError, match="guide="):
        evaluate.log_likelihood(model, x, 10)


def test_modules_run_in_eval_mode_and_get_their_mode_back():
    class Recording(LinearGaussian):
        def model(self, x):
            self.modes.append(self.training)
            super().model(x)

    lg = Recording().set_perturbed_posterior()
    x = lg.sample_x(3)
    for call in (
        lambda: evaluate.log_likelihood(lg, x, 4),
        lambda: evaluate.iwae_bound(lg.model, x, 4, guide=lg.guide),  # the methods' module too
        lambda: evaluate.latent_statistics(lg, x, 4),
    ):
        lg.modes = []
        lg.train()
        out = call()
        assert lg.modes and not any(lg.modes), lg.modes  # eval mode while it ran ...
        assert lg.training  # ... and training mode again after
        assert not (torch.is_tensor(out) and out.requires_grad)


def test_report_and_the_evaluate_command(tmp_path, capsys):
    from pyro_vae import ModelConfig, RunConfig, TrainConfig, train
    from pyro_vae.cli import main
    from pyro_vae.data import Dataset

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = Dataset("tiny", *(torch.rand(n, 1, 4, 4, generator=g).round() for n in (64, 24)))
    config = RunConfig(
        model=ModelConfig(latent_dim=3, hidden=(8,)),
        train=TrainConfig(epochs=1, batch_size=32, device="cpu"),
    )
    result = train(config, progress=False, dataset=data)
    out = evaluate.report(result.model, data.test, nll_samples=200, iwae_samples=10)
    assert (
        out["test_elbo"] <= out["test_iwae"] + 0.5
        and out["test_iwae"] <= out["test_log_likelihood"] + 0.5
    )
    assert out["test_nll"] == -out["test_log_likelihood"]
    assert out["test_elbo"] == pytest.approx(-(out["rate"] + out["distortion"]), abs=1.0)
    assert len(out["kl_per_dim"]) == 3
    # active units against a hand computation: Cov_x(E_q[z|x]) > 0.01 per dimension
    with torch.no_grad():
        means = result.model.q.mean(result.model.encoder(data.test))
    assert out["active_units"] == int((means.var(0) > 0.01).sum())

    # the CLI on a saved run (its data set must be loadable: use the bundled digits)
    run = tmp_path / "run"
    config = RunConfig(
        model=ModelConfig(latent_dim=2, hidden=(8,)),
        train=TrainConfig(epochs=1, batch_size=256, device="cpu"),
    )
    train(config, run, progress=False)
    args = ["evaluate", str(run), "--nll-samples", "20", "--iwae-samples", "5", "--limit", "30"]
    assert main([*args, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("test_elbo", "test_iwae", "test_nll", "rate", "distortion", "active_units"):
        assert key in got
    assert got["nll_samples"] == 20 and len(got["kl_per_dim"]) == 2 and got["test_points"] == 30
    assert main(args) == 0
    assert "kl_per_dim" in capsys.readouterr().out


def test_kl_bar_chart(tmp_path):
    from pyro_vae import plots
    from pyro_vae.models.vae import VAE

    vae = VAE((1, 4, 4), 5, hidden=(8,))
    x = torch.rand(20, 1, 4, 4).round()
    path = plots.kl_per_dimension(vae, x, tmp_path / "kl.png")
    assert path is not None and path.stat().st_size > 0


def _tiny_models() -> dict[str, torch.nn.Module]:
    from pyro_vae.models import HierarchicalVAE, StackedM2

    torch.manual_seed(0)
    return {
        "vae": VAE((1, 4, 4), 3, hidden=(8,)),
        "hvae": HierarchicalVAE((1, 4, 4), 3, hidden=(8,)),
        "m1m2": StackedM2((1, 4, 4), 3, latent_dim=3, latent_dim2=2, hidden=(8,)),
    }


def test_analytic_kl_only_where_the_models_parents_are_drawn_first():
    # p(z1|z2) with z2 ~ q(z2|z1) (hvae), p(z1|z, y) with z ~ q(z|z1, y) (m1m2): Monte Carlo there
    x = torch.rand(5, 1, 4, 4).round()
    expected = {"vae": {"z"}, "hvae": {"z2"}, "m1m2": {"z"}}
    for name, m in _tiny_models().items():
        model_trace, guide_trace = importance_traces(m.model, m.guide, (x,), {}, 2, 1)
        assert evaluate.analytic_kl_sites(model_trace, guide_trace) == expected[name], name


def test_rate_plus_distortion_is_minus_the_elbo_for_a_chain_of_latents():
    chain = Chain()
    x = torch.linspace(-2, 2, 20)
    torch.manual_seed(0)
    bound = evaluate.elbo(chain, x, num_particles=4000)
    stats = evaluate.latent_statistics(chain, x, 4000)
    # the closed-form KL(q(z1|x) || p(z1|z2)) at a drawn z2 would add about 100 nats per point
    assert bound == pytest.approx(-(stats["rate"] + stats["distortion"]), abs=0.2)
    assert len(stats["kl_per_dim"]) == 2
