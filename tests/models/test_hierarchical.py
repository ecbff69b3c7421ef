"""The two-stochastic-layer VAE: its loss written out by hand, every objective, the log-likelihood
estimator, the conveniences, and the CLI end to end (with a flow guide via --flows)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence
from torch.nn.functional import softplus

from pyro_vae import OBJECTIVES, DataError, ModelConfig, build_model
from pyro_vae.cli import main
from pyro_vae.evaluate import log_likelihood
from pyro_vae.models import HierarchicalVAE

from .test_contract import MODEL_REFUSED

X_SHAPE = (1, 4, 4)


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def _hvae(**kwargs) -> HierarchicalVAE:
    torch.manual_seed(0)
    return HierarchicalVAE(X_SHAPE, 4, 2, hidden=(8,), **kwargs).double()


def _x(n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(n, *X_SHAPE, generator=g), generator=g).double()


def _normal_log_prob(z, loc, scale):
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_loss_equals_the_hand_computed_two_layer_elbo() -> None:
    m, x = _hvae(), _x()
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(m.model, m.guide, x)
    pyro.set_rng_seed(3)
    tr = poutine.trace(m.guide).get_trace(x)
    z1, z2 = tr.nodes["z1"]["value"], tr.nodes["z2"]["value"]
    assert z1.shape == (6, 4) and z2.shape == (6, 2)
    loc1, scale1 = m.q.loc_scale(m.encoder(x))  # q(z1|x)
    loc2, scale2 = m.q2.loc_scale(m.up(z1))  # q(z2|z1)
    ploc1, pscale1 = m.p1.loc_scale(m.down(z2))  # p(z1|z2)
    logits = m.decoder(z1).flatten(1)
    log_px = (x.flatten(1) * logits - softplus(logits)).sum(-1)
    elbo = (
        log_px
        + _normal_log_prob(z1, ploc1, pscale1)
        + _normal_log_prob(z2, torch.zeros(2), torch.ones(2))
        - _normal_log_prob(z1, loc1, scale1)
        - _normal_log_prob(z2, loc2, scale2)
    )
    assert loss == pytest.approx(-float(elbo.sum().detach()), rel=1e-10)


def test_meanfield_estimates_the_z1_term_by_monte_carlo() -> None:
    m, x = _hvae(), _x()
    pyro.set_rng_seed(0)
    tr = poutine.trace(m.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(m.model, trace=tr)).get_trace(x)
    # p(z1|z2) depends on a z2 drawn given z1: no closed form may be used against it
    with pytest.raises(NotImplementedError):
        kl_divergence(tr.nodes["z1"]["fn"], model_tr.nodes["z1"]["fn"])
    kl_divergence(tr.nodes["z2"]["fn"], model_tr.nodes["z2"]["fn"])  # z2 vs p(z2): analytic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro cannot verify the mean-field ordering (z1 first)
        assert math.isfinite(TraceMeanField_ELBO(num_particles=2).loss(m.model, m.guide, x))


@pytest.mark.parametrize(
    "objective", [o for o in OBJECTIVES.names() if ("hvae", o) not in MODEL_REFUSED]
)
@pytest.mark.parametrize(("guide", "prior"), [("diagonal", "normal"), ("iaf", "vamp")])
def test_every_objective_with_vectorised_particles(objective: str, guide: str, prior: str) -> None:
    opts = {"num_pseudo": 3} if prior == "vamp" else {}
    m = _hvae(guide=guide, prior=prior, prior_options=opts, guide_options={})
    obj = OBJECTIVES.build(objective, num_particles=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = obj.loss_and_grads(m.model, m.guide, _x())
    assert math.isfinite(loss)
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_log_likelihood_estimator_bounds_above_the_elbo() -> None:
    m, x = _hvae(guide="planar", guide_options={"num_flows": 2}), _x()
    pyro.set_rng_seed(0)
    ll = log_likelihood(m, x, 500)
    assert ll.shape == (6,) and torch.isfinite(ll).all()
    elbo = -Trace_ELBO(num_particles=500, vectorize_particles=True, max_plate_nesting=1).loss(
        m.model, m.guide, x
    )
    assert float(ll.sum()) > elbo  # IWAE-500 >= ELBO, by far more than Monte Carlo error here


def test_conveniences_work_on_z1() -> None:
    m, x = _hvae(), _x()
    with torch.no_grad():
        assert m.encode(x).event_shape == (4,)
        assert m.latent_mean(x).shape == (6, 4)
        assert m.reconstruct(x).shape == x.shape
        s = m.sample(5)
        assert s.shape == (5, *X_SHAPE) and s.min() >= 0 and s.max() <= 1
        assert m.decode_mean(torch.zeros(2, 4, dtype=torch.float64)).shape == (2, *X_SHAPE)
    with pytest.raises(DataError, match="shape"):
        m.check_data(torch.rand(3, 1, 5, 5))


def test_registered_and_built_from_the_config() -> None:
    m = build_model(
        ModelConfig(model="hvae", latent_dim=6, hidden=(16,), model_options={"latent_dim2": 3}),
        X_SHAPE,
        10,
    )
    assert isinstance(m, HierarchicalVAE) and m.latent_dim2 == 3 and m.prior.latent_dim == 3
    default = build_model(ModelConfig(model="hvae", latent_dim=6, hidden=(16,)), X_SHAPE, 10)
    assert default.latent_dim2 == 3  # half of z1


def test_cli_trains_a_hierarchical_vae_with_a_flow_guide(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--run-dir", str(run), "--model", "hvae", "--latent-dim", "4"]
    args += ["--latent-dim2", "2", "--guide", "planar", "--flows", "3", "--prior", "vamp"]
    args += ["--prior-opt", "num_pseudo=5", "--hidden", "16", "--epochs", "1", "--no-progress"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())["model"]
    assert config["guide_options"] == {"num_flows": 3} and config["model_options"] == {
        "latent_dim2": 2
    }
    assert (run / "figures" / "samples.png").exists()
    assert main(["evaluate", str(run), "--json", "--nll-samples", "20", "--limit", "10"]) == 0
