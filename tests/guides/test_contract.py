"""The contract every guide x prior pair meets, iterated over the registries (new entries are tested
for free): a finite loss whose gradients reach every parameter, samples of the right shapes (with
vectorised particles too), a save/load round trip that reproduces the log-densities, on CPU at float64.
Also: every guide with every registered objective."""

from __future__ import annotations

import inspect
import io
import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from pyro_vae import GUIDES, OBJECTIVES, PRIORS, VAE, ConfigError
from pyro_vae.objectives import NeedsDataSize

from ..models.test_contract import REFUSED

X_SHAPE = (1, 4, 4)
LATENT = 3
#: the smallest settings of every size option a guide or prior may take; each gets those it accepts
SMALL = {"num_flows": 2, "num_pseudo": 4, "components": 3, "rank": 2, "hidden": [8]}


def _small(factory, extra: dict | None = None) -> dict:
    params = inspect.signature(factory).parameters
    return {k: v for k, v in {**SMALL, **(extra or {})}.items() if k in params}


def build(guide: str, prior: str, seed: int = 0, **kwargs) -> VAE:
    torch.manual_seed(seed)
    vae = VAE(
        X_SHAPE,
        LATENT,
        hidden=(8,),
        guide=guide,
        guide_options=_small(GUIDES.get(guide)),
        prior=prior,
        prior_options=_small(PRIORS.get(prior)),
        **kwargs,
    )
    return vae.double()


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    # pyro.module() would otherwise hand a new model the stale parameters of an old one
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    # the generator draws both the probabilities and the coins (coins from a global RNG seeded
    # like the generator would repeat its draws, and every pixel would be 0)
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(5, *X_SHAPE, generator=g), generator=g).double()


PAIRS = [(g, p) for g in GUIDES.names() for p in PRIORS.names()]


@pytest.mark.parametrize(("guide", "prior"), PAIRS)
def test_guide_prior_contract(guide: str, prior: str, data: torch.Tensor) -> None:
    vae = build(guide, prior)
    x = data
    n, d = x.shape[0], LATENT

    # a finite loss (3 vectorised particles) whose gradients reach every parameter
    loss = Trace_ELBO(
        num_particles=3, vectorize_particles=True, max_plate_nesting=1
    ).differentiable_loss(vae.model, vae.guide, x)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    loss.backward()
    for name, p in vae.named_parameters():
        assert p.dtype == torch.float64, name
        assert p.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"the gradient of {name} is zero"

    # shapes: q(z|x) and p(z), plain and with vectorised particles
    with torch.no_grad():
        q = vae.encode(x)
        assert q.batch_shape == (n,) and q.event_shape == (d,)
        z = q.rsample((4,))
        assert z.shape == (4, n, d) and q.log_prob(z).shape == (4, n)
        pz = vae.prior()
        assert pz.batch_shape == () and pz.event_shape == (d,)
        assert pz.sample((6,)).shape == (6, d) and pz.log_prob(z).shape == (4, n)
        with pyro.plate("particles", 3, dim=-2):
            tr = poutine.trace(vae.guide).get_trace(x)
        assert tr.nodes["z"]["value"].shape == (3, n, d)
        assert vae.sample(2).shape == (2, *X_SHAPE)
        assert vae.reconstruct(x).shape == x.shape
        assert vae.latent_mean(x).shape == (n, d)

    # save and load: a model built with another seed, given the state dict, scores identically
    buf = io.BytesIO()
    torch.save(vae.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = build(guide, prior, seed=123)
    other.load_state_dict(state)
    with torch.no_grad():
        densities = []
        for m in (vae, other):
            torch.manual_seed(7)
            q = m.encode(x)
            z = q.rsample((2,))
            densities.append((z, q.log_prob(z), m.prior().log_prob(z)))
            pyro.set_rng_seed(7)
            densities[-1] += (Trace_ELBO().loss(m.model, m.guide, x),)
        for a, b in zip(*densities):
            assert torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("objective", OBJECTIVES.names())
@pytest.mark.parametrize("guide", GUIDES.names())
def test_every_guide_with_every_objective(guide: str, objective: str, data: torch.Tensor) -> None:
    vae = build(guide, "normal")
    obj = OBJECTIVES.build(objective, num_particles=3)
    if isinstance(obj, NeedsDataSize):
        obj.set_data_size(1000)
    if (guide, objective) in REFUSED and not objective.startswith("jit"):
        # a guide without what the objective needs (a factorised q, a mean and covariance)
        with pytest.raises(ConfigError, match=REFUSED[guide, objective]):
            obj.loss_and_grads(vae.model, vae.guide, data)
        return
    if objective.startswith("jit") and guide == "spline":
        # Pyro's spline is not JIT-traceable; the guide says so instead of failing at random
        with pytest.raises(Exception, match="cannot be traced by the JIT"):
            obj.loss_and_grads(vae.model, vae.guide, data)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JIT tracer warnings
        loss = obj.loss_and_grads(vae.model, vae.guide, data)
    assert math.isfinite(loss)
    grads = [p.grad for p in vae.q.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize(
    "guide",
    [g for g in GUIDES.names() if "num_flows" in inspect.signature(GUIDES.get(g)).parameters],
)
def test_flow_guides_reject_a_bad_number_of_flows(guide: str) -> None:
    with pytest.raises(ConfigError, match="num_flows"):
        GUIDES.build(guide, feature_dim=4, latent_dim=2, num_flows=0)
