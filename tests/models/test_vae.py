"""The VAE's Pyro loss against a hand-written negative ELBO, and the model's conveniences."""

from __future__ import annotations

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.nn.functional import softplus

from pyro_vae import VAE, ConfigError, DataError


def _hand_negative_elbo(vae: VAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """-[log p(x|z) + log p(z) - log q(z|x)] summed over the batch, written out by hand."""
    h = vae.encoder.net(x.flatten(1))
    loc = vae.q.loc(h)
    scale = softplus(vae.q.raw_scale(h)) + vae.q.min_scale
    log_q = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    logits = vae.decoder.net(z)
    xf = x.flatten(1)
    log_px = (xf * logits - softplus(logits)).sum(-1)  # Bernoulli log-likelihood on logits
    return -(log_px + log_pz - log_q).sum().detach()


def test_pyro_loss_equals_hand_computed_negative_elbo() -> None:
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,))
    x = torch.rand(5, 1, 4, 4)
    pyro.set_rng_seed(3)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(3)  # same seed -> the guide draws the same z
    z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    assert loss == pytest.approx(_hand_negative_elbo(vae, x, z).item(), rel=1e-5)


def test_meanfield_uses_the_closed_form_kl() -> None:
    vae = VAE((1, 4, 4), latent_dim=3, hidden=(8,))
    x = torch.rand(5, 1, 4, 4)
    pyro.set_rng_seed(0)
    loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(0)
    z = poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"]
    h = vae.encoder(x)
    loc, scale = vae.q.loc_scale(h)
    kl = (0.5 * (loc**2 + scale**2 - 1) - scale.log()).sum()
    logits = vae.decoder(z).flatten(1)
    log_px = (x.flatten(1) * logits - softplus(logits)).sum()
    assert loss == pytest.approx(float(kl - log_px), rel=1e-5)


def test_vectorized_particles_shapes() -> None:
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,))
    x = torch.rand(7, 1, 8, 8)
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(vae.model, vae.guide, x)
    assert math.isfinite(loss)
    assert vae.sample(5).shape == (5, 1, 8, 8)
    assert vae.reconstruct(x).shape == x.shape
    assert vae.latent_mean(x).shape == (7, 2)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous-bernoulli"])
def test_every_likelihood_trains_a_step(likelihood: str) -> None:
    pyro.clear_param_store()
    vae = VAE((1, 8, 8), latent_dim=2, hidden=(16,), likelihood=likelihood)
    x = torch.rand(16, 1, 8, 8)
    opt = pyro.optim.Adam({"lr": 1e-2})
    svi = pyro.infer.SVI(vae.model, vae.guide, opt, Trace_ELBO())
    first = svi.step(x)
    for _ in range(30):
        last = svi.step(x)
    assert math.isfinite(first) and last < first


def test_learned_gaussian_scale_is_a_parameter() -> None:
    vae = VAE(
        (4,),
        latent_dim=2,
        hidden=(8,),
        likelihood="gaussian",
        likelihood_options={"learn_scale": True, "scale": 0.5},
    )
    names = {n for n, _ in vae.named_parameters()}
    assert "likelihood.raw_scale" in names
    assert torch.allclose(vae.likelihood.scale, torch.full((4,), 0.5), atol=1e-3)


def test_conv_networks_on_28x28() -> None:
    vae = VAE((1, 28, 28), latent_dim=4, network="conv", hidden=(32,))
    x = torch.rand(3, 1, 28, 28)
    elbo = Trace_ELBO(num_particles=2, vectorize_particles=True, max_plate_nesting=1)
    assert math.isfinite(elbo.loss(vae.model, vae.guide, x))
    assert vae.reconstruct(x).shape == x.shape


def test_bad_parts_are_named() -> None:
    with pytest.raises(ConfigError, match="unknown guide 'nope'"):
        VAE((4,), guide="nope")
    with pytest.raises(ConfigError, match="latent size"):
        VAE((4,), latent_dim=0)
    with pytest.raises(ConfigError, match="divisible by 4"):
        VAE((1, 8, 9), network="conv")
    with pytest.raises(ConfigError, match="takes no option 'bogus'"):
        VAE((4,), guide="diagonal", guide_options={"bogus": 1})


def test_check_data_rejects_bad_data() -> None:
    vae = VAE((1, 2, 2), latent_dim=2, hidden=(4,))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        vae.check_data(torch.full((3, 1, 2, 2), 2.0))
    with pytest.raises(DataError, match="NaN"):
        vae.check_data(torch.tensor([float("nan"), 0, 0, 0]).reshape(1, 1, 2, 2))
    with pytest.raises(DataError, match="shape"):
        vae.check_data(torch.rand(3, 5))
