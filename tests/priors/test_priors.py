"""Priors: each density written out by hand, the analytic KL where one exists and the Monte Carlo
fallback elsewhere, the VampPrior's link to the encoder, and option errors."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.autograd.functional import jacobian
from torch.distributions import kl_divergence

from pyro_vae import PRIORS, VAE, ConfigError
from pyro_vae.priors import FlowPrior, GaussianMixture, VampPrior

D = 3


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def _vae(prior: str, guide: str = "diagonal", **prior_options: object) -> VAE:
    torch.manual_seed(0)
    opts = {"num_pseudo": 4} if prior == "vamp" else {}
    opts.update(prior_options)
    return VAE((1, 4, 4), D, hidden=(8,), guide=guide, prior=prior, prior_options=opts).double()


def _x() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(6, 1, 4, 4, generator=g), generator=g).double()


def test_normal_prior_takes_the_analytic_kl_path() -> None:
    vae = _vae("normal")
    x = _x()
    q, p = vae.encode(x), vae.prior()
    kl = kl_divergence(q, p.expand(q.batch_shape))  # registered: the closed form
    loc, scale = q.base_dist.loc, q.base_dist.scale
    assert torch.allclose(kl, (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum(-1))
    pyro.set_rng_seed(0)
    meanfield = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    mc = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert meanfield != pytest.approx(mc, abs=1e-6)  # a different (lower-variance) estimate


@pytest.mark.parametrize("prior", [p for p in PRIORS.names() if p != "normal"])
def test_priors_without_a_closed_form_fall_back_to_monte_carlo(prior: str) -> None:
    vae = _vae(prior)
    x = _x()
    q = vae.encode(x)
    with pytest.raises(NotImplementedError):
        kl_divergence(q, vae.prior().expand(q.batch_shape))
    # the fallback scores the sampled z: the same number as the plain Monte Carlo ELBO
    pyro.set_rng_seed(0)
    meanfield = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    mc = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert math.isfinite(meanfield) and meanfield == pytest.approx(mc, rel=1e-12)


def test_mixture_density_by_hand() -> None:
    prior = GaussianMixture(D, components=4).double()
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.0, 1.0, -1.0, 0.5]))
    z = torch.randn(5, 2, D, dtype=torch.float64)
    locs, scales = prior.locs, torch.nn.functional.softplus(prior.raw_scales) + 1e-4
    log_comp = (
        -0.5 * ((z.unsqueeze(-2) - locs) / scales) ** 2 - scales.log() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    expected = torch.logsumexp(log_comp + torch.log_softmax(prior.logits, 0), -1)
    assert torch.allclose(prior().log_prob(z), expected)


@pytest.mark.parametrize("guide", ["diagonal", "lowrank", "planar"])
def test_vamp_prior_is_the_mean_of_posteriors_at_the_pseudo_inputs(guide: str) -> None:
    vae = _vae("vamp", guide)
    prior = vae.prior
    assert isinstance(prior, VampPrior)
    u = prior.pseudo_inputs()
    assert u.shape == (4, 1, 4, 4) and u.min() >= 0 and u.max() <= 1
    z = torch.randn(7, D, dtype=torch.float64)
    # q(z|u_k) of the model's own guide (its Gaussian base, for a flow)
    comps = vae.q.prior_component(vae.encoder(u))
    log_qk = torch.stack([comps.log_prob(z[:, None, :])[:, k] for k in range(4)], -1)
    expected = torch.logsumexp(log_qk, -1) - math.log(4)
    assert torch.allclose(prior().log_prob(z), expected)
    # the pseudo-inputs learn, and the prior pulls on the encoder
    prior().log_prob(z).sum().backward()
    assert prior.pseudo_raw.grad.abs().sum() > 0
    assert all(p.grad is not None for p in vae.encoder.parameters())
    # the encoder is the model's, not a second copy: listed once in the state dict
    assert not any(k.startswith("prior.") and "encoder" in k for k in vae.state_dict())


def test_vamp_prior_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="not attached"):
        VampPrior(D, num_pseudo=3)()


@pytest.mark.parametrize("kind", ["autoregressive", "spline"])
def test_flow_prior_density_is_the_change_of_variables_formula(kind: str) -> None:
    torch.manual_seed(0)
    prior = FlowPrior(D, kind=kind, num_flows=3).double()
    z = torch.randn(4, D, dtype=torch.float64)

    def f(v: torch.Tensor) -> torch.Tensor:  # z -> eps: T_1 o ... o T_K, T_K first
        for t in reversed(prior.layers):
            v = t._call(v)
        return v

    expected = torch.stack(
        [
            -0.5 * f(zi).pow(2).sum()
            - 0.5 * D * math.log(2 * math.pi)
            + torch.linalg.slogdet(jacobian(f, zi))[1]
            for zi in z
        ]
    )
    assert torch.allclose(prior().log_prob(z), expected, atol=1e-9)
    # a sample drawn by inversion is scored consistently
    torch.manual_seed(1)
    s = prior().sample((5,))
    assert s.shape == (5, D)
    eps = f(s)
    log_det = torch.stack([torch.linalg.slogdet(jacobian(f, si))[1] for si in s])
    expected_s = -0.5 * eps.pow(2).sum(-1) - 0.5 * D * math.log(2 * math.pi) + log_det
    assert torch.allclose(prior().log_prob(s), expected_s, atol=1e-8)


def test_flow_prior_never_answers_from_a_stale_cache() -> None:
    torch.manual_seed(0)
    prior = FlowPrior(D, num_flows=2).double()
    z = torch.randn(3, D, dtype=torch.float64)
    before = prior().log_prob(z)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(0.1)
    assert not torch.allclose(prior().log_prob(z), before)


def test_hierarchical_vamp_components_come_from_the_top_layer() -> None:
    from pyro_vae.models import HierarchicalVAE

    torch.manual_seed(0)
    m = HierarchicalVAE((1, 4, 4), 4, 2, hidden=(8,), prior="vamp", prior_options={"num_pseudo": 3})
    p = m.prior()
    assert p.event_shape == (2,) and p.batch_shape == ()
    tr = poutine.trace(m.guide).get_trace(torch.rand(5, 1, 4, 4))
    assert math.isfinite(float(p.log_prob(tr.nodes["z2"]["value"]).sum().detach()))


@pytest.mark.parametrize(
    ("prior", "options", "match"),
    [
        ("mixture", {"components": 0}, "components"),
        ("vamp", {"num_pseudo": 0}, "num_pseudo"),
        ("flow", {"kind": "maf"}, "kind"),
        ("flow", {"num_flows": 0}, "num_flows"),
        ("normal", {"components": 3}, "takes no option"),
    ],
)
def test_bad_prior_options_are_config_errors(prior: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PRIORS.build(prior, latent_dim=D, **options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_diagonal_mixture_equals_pyro_mixture_same_family(dtype: torch.dtype) -> None:
    import pyro.distributions as dist

    from pyro_vae.priors.mixture import diagonal_mixture

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g, dtype=dtype)
    loc = torch.randn(50, 4, generator=g, dtype=dtype)
    scale = 0.01 + 0.2 * torch.rand(50, 4, generator=g, dtype=dtype)  # small, like posteriors
    fast = diagonal_mixture(logits, loc, scale)
    slow = dist.MixtureSameFamily(
        dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1)
    )
    z = loc[:7] + 0.05 * torch.randn(7, 4, generator=g, dtype=dtype)  # near some components
    z = torch.stack([z, torch.randn(7, 4, generator=g, dtype=dtype)])  # and anywhere
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert torch.allclose(fast.log_prob(z), slow.log_prob(z), rtol=tol, atol=tol)
    # expanded over a data plate, as pyro.plate does to the prior
    fast_e, slow_e = fast.expand((7,)), slow.expand((7,))
    assert fast_e.log_prob(z).shape == (2, 7)
    assert torch.allclose(fast_e.log_prob(z), slow_e.log_prob(z), rtol=tol, atol=tol)
