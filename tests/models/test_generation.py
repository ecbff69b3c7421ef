"""Generation: with ``x=None`` every registered model's ``model`` draws data, so Predictive works.

The tests run over the model registry: a newly registered model is tested here as soon as it has a
small constructor in :data:`SMALL` (and fails loudly until it has one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Predictive
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.models import ADGM, CVAE, M2, MODELS, SDGM, VAE, HierarchicalVAE, StackedM2
from pyro_vae.models.cvae import join

X_SHAPE = (1, 8, 8)
K = 3  # classes of the label models


@dataclass(frozen=True)
class Small:
    """How to build a small instance of a registered model and what its ``x`` is conditioned on."""

    build: Callable[[], nn.Module]
    #: the latent site p(x | ...) reads
    latent: str
    #: E[x | latent = v, y] for latents ``v`` of shape (N, D) and labels ``y`` of shape (N,) or None
    expected: Callable[[Any, torch.Tensor, torch.Tensor | None], torch.Tensor]
    #: whether ``model`` takes labels ``y`` (and has a site ``y``)
    labelled: bool = False


SMALL: dict[str, Small] = {
    "vae": Small(
        lambda: VAE(X_SHAPE, latent_dim=2, hidden=(16,)),
        "z",
        lambda m, v, y: m.decode_mean(v),
    ),
    "hvae": Small(
        lambda: HierarchicalVAE(X_SHAPE, latent_dim=2, hidden=(16,)),
        "z1",
        lambda m, v, y: m.decode_mean(v),
    ),
    "cvae": Small(
        lambda: CVAE(X_SHAPE, K, latent_dim=2, hidden=(16,)),
        "z",
        lambda m, v, y: m.conditional_mean(v, y),
        labelled=True,
    ),
    "m2": Small(
        lambda: M2(X_SHAPE, K, latent_dim=2, hidden=(16,)),
        "z",
        lambda m, v, y: m.conditional_mean(v, y),
        labelled=True,
    ),
    "adgm": Small(
        lambda: ADGM(X_SHAPE, K, latent_dim=2, aux_dim=2, hidden=(16,)),
        "z",
        lambda m, v, y: m.conditional_mean(v, y),  # a comes after x: p(x | z, y) is M2's
        labelled=True,
    ),
    "sdgm": Small(
        lambda: SDGM(X_SHAPE, K, latent_dim=2, aux_dim=2, hidden=(16,)),
        "z",
        lambda m, v, y: sdgm_mean(m, v, y),
        labelled=True,
    ),
    "m1m2": Small(
        lambda: StackedM2(X_SHAPE, K, latent_dim=4, latent_dim2=2, hidden=(16,)),
        "z1",
        lambda m, v, y: m.m1.decode_mean(v),
        labelled=True,
    ),
}


def sdgm_mean(m: SDGM, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """E[x | z = v, y] of the SDGM: the decoder's mean averaged over a ~ p(a | z, y), by Monte Carlo
    with enough draws of a that its error is small beside the tests' tolerance."""
    zy = join(v, m.one_hot(y))
    draws = max(50, 200_000 // v.shape[0])
    a = m.p_a(zy).sample((draws,))
    return m.likelihood.mean(m.decoder(join(zy.expand(draws, *zy.shape), a))).mean(0)


NAMES = MODELS.names()
LABELLED = [n for n in NAMES if n in SMALL and SMALL[n].labelled]


def small(name: str) -> Small:
    if name not in SMALL:
        pytest.fail(
            f"the registered model {name!r} has no small constructor in SMALL in {__file__}: "
            "add one, so that its generation path is tested"
        )
    return SMALL[name]


@pytest.fixture(autouse=True)
def _fresh_param_store() -> None:
    pyro.clear_param_store()


def latent_dim(model: nn.Module, site: str) -> int:
    return int(poutine.trace(model.model).get_trace(size=1).nodes[site]["value"].shape[-1])


def binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def test_every_registered_model_has_a_small_constructor() -> None:
    missing = sorted(set(NAMES) - set(SMALL))
    assert not missing, f"add small constructors to SMALL for {missing}"


@pytest.mark.parametrize("parallel", [False, True], ids=["sequential", "parallel"])
@pytest.mark.parametrize("name", NAMES)
def test_predictive_draws_size_data(name: str, parallel: bool) -> None:
    spec = small(name)
    m = spec.build()
    S, n = 4, 3
    with torch.no_grad():
        samples = Predictive(m.model, num_samples=S, parallel=parallel)(size=n)
    assert samples["x"].shape == (S, n, *X_SHAPE)
    assert samples[spec.latent].shape[:2] == (S, n)
    assert ("y" in samples) == spec.labelled
    if spec.labelled:
        assert samples["y"].shape == (S, n)
        assert 0 <= int(samples["y"].min()) and int(samples["y"].max()) < K
    # x is a latent (sampled) site of a plate of n data
    site = poutine.trace(m.model).get_trace(size=n).nodes["x"]
    assert not site["is_observed"]
    assert [(f.name, f.size) for f in site["cond_indep_stack"]] == [("data", n)]


@pytest.mark.parametrize("name", NAMES)
def test_generated_x_is_drawn_not_observed_or_fixed(name: str) -> None:
    spec = small(name)
    m = spec.build()
    data = torch.bernoulli(torch.full((5, *X_SHAPE), 0.5))
    with torch.no_grad():
        observed = Predictive(m.model, num_samples=2)(data)["x"]
        drawn = Predictive(m.model, num_samples=2)(size=200)["x"]
    # with data, x is observed as before: Predictive hands the data back
    assert torch.equal(observed, data.expand(2, *data.shape))
    # without, every draw is a fresh Bernoulli draw: binary, not a mean, and not a fixed tensor
    assert binary(drawn)
    assert 0.05 < float(drawn.mean()) < 0.95
    assert not torch.equal(drawn[0], drawn[1])
    assert not torch.equal(drawn[0, :5], data)


@pytest.mark.parametrize("name", NAMES)
def test_draws_at_fixed_latents_average_to_the_decoder_mean(name: str) -> None:
    """Conditioned on k latents (each repeated r times), the frequency of ones of each pixel is the
    decoder's Bernoulli mean at that latent, to Monte Carlo tolerance (5 standard errors)."""
    spec = small(name)
    m = spec.build()
    k, r = 4, 1000
    v = 3 * torch.randn(k, latent_dim(m, spec.latent))
    labels = torch.arange(k) % K if spec.labelled else None
    given = {"y": labels.repeat(r)} if spec.labelled else {"size": k * r}
    with torch.no_grad():
        x = Predictive(m.model, posterior_samples={spec.latent: v.repeat(r, 1)[None]})(**given)["x"]
        p = spec.expected(m, v, labels)  # (k, *X_SHAPE)
    assert x.shape == (1, k * r, *X_SHAPE)
    assert binary(x)
    freq = x[0].reshape(r, k, *X_SHAPE).mean(0)
    se = (p * (1 - p) / r).sqrt().clamp_min(1e-3)
    assert ((freq - p).abs() <= 5 * se).all(), float(((freq - p).abs() / se).max())
    # the means differ between the latents, so data ignoring the latent (a fixed tensor) would fail
    assert float((p.amax(0) - p.amin(0)).max()) > 0.1


@pytest.mark.parametrize("name", NAMES)
def test_draws_from_the_prior_average_to_the_decoder_mean_of_their_latents(name: str) -> None:
    """Unconditioned draws of p(x): the pixel frequencies match the mean of E[x | latent] over the
    latents drawn in the same traces, and unlabelled generation draws the labels from uniform p(y)."""
    spec = small(name)
    m = spec.build()
    S, n = 2, 2000
    with torch.no_grad():
        samples = Predictive(m.model, num_samples=S)(size=n)
        y = samples["y"].reshape(-1) if spec.labelled else None
        p = spec.expected(m, samples[spec.latent].reshape(S * n, -1), y)
    x = samples["x"].reshape(S * n, *X_SHAPE)
    assert binary(x)
    se = ((p * (1 - p)).mean(0) / (S * n)).sqrt().clamp_min(1e-3)
    assert ((x.mean(0) - p.mean(0)).abs() <= 5 * se).all()
    if spec.labelled:
        freq = torch.bincount(y, minlength=K).double() / (S * n)
        assert ((freq - 1 / K).abs() <= 5 * (2 / K**2 / (S * n)) ** 0.5).all(), freq


@pytest.mark.parametrize("name", LABELLED)
def test_given_labels_generate_class_conditional_data(name: str) -> None:
    spec = small(name)
    m = spec.build()
    labels = torch.tensor([2, 0, 1, 1])
    with torch.no_grad():
        samples = Predictive(m.model, num_samples=3)(y=labels)
        sized = Predictive(m.model, num_samples=3)(y=labels, size=4)
    assert torch.equal(samples["y"], labels.expand(3, 4))
    assert samples["x"].shape == (3, 4, *X_SHAPE)
    assert binary(samples["x"])
    assert torch.equal(sized["y"], labels.expand(3, 4))
    site = poutine.trace(m.model).get_trace(y=labels).nodes
    assert site["y"]["is_observed"] and not site["x"]["is_observed"]


def test_stacked_generation_draws_z1_given_z_and_y_then_x() -> None:
    """M1+M2 generates z1 ~ p(z1 | z, y) (the label changes it), then x ~ p(x | z1)."""
    m = StackedM2(X_SHAPE, K, latent_dim=4, latent_dim2=2, hidden=(16,))
    r = 2000
    z = 2 * torch.randn(1, 2).expand(K, 2)  # one style, every label
    labels = torch.arange(K)
    with torch.no_grad():
        s = Predictive(m.model, posterior_samples={"z": z.repeat(r, 1)[None]})(y=labels.repeat(r))
        p_z1 = m.likelihood(m.decoder(join(z, m.one_hot(labels))))
    z1 = s["z1"][0].reshape(r, K, -1)
    assert ((z1.mean(0) - p_z1.mean).abs() <= 5 * p_z1.stddev / r**0.5).all()
    # drawn, not set to the mean: the spread is p(z1 | z, y)'s (a 2000-draw std is within 10%)
    assert ((z1.std(0) / p_z1.stddev - 1).abs() < 0.1).all()
    assert float((p_z1.mean[0] - p_z1.mean[1]).abs().max()) > 10 * float(p_z1.stddev.max()) / r**0.5
    assert binary(s["x"]) and s["x"].shape == (1, K * r, *X_SHAPE)
    # and M1 alone generates too
    with torch.no_grad():
        m1 = Predictive(m.m1_model, num_samples=2)(size=3)
    assert m1["x"].shape == (2, 3, *X_SHAPE) and binary(m1["x"])
    assert m1["z1"].shape == (2, 3, 4)


@pytest.mark.parametrize("name", NAMES)
def test_generation_errors_name_size(name: str) -> None:
    spec = small(name)
    m = spec.build()
    data = torch.bernoulli(torch.full((5, *X_SHAPE), 0.5))
    with pytest.raises(ConfigError, match="size"):
        m.model()
    with pytest.raises(ConfigError, match="size"):
        m.model(None)
    with pytest.raises(ConfigError, match="size"):
        Predictive(m.model, num_samples=2)()
    with pytest.raises(ConfigError, match="size=6"):
        m.model(data, size=6)
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="size"):
            m.model(size=bad)
    if spec.labelled:
        with pytest.raises(ConfigError, match="size"):
            m.model(None, None)
        with pytest.raises(ConfigError, match="size=3"):
            m.model(y=torch.tensor([0, 1]), size=3)
    # a size that agrees with the data changes nothing
    torch.manual_seed(3)
    plain = poutine.trace(m.model).get_trace(data)
    torch.manual_seed(3)
    sized = poutine.trace(m.model).get_trace(data, size=5)
    for site in ("x", spec.latent):
        assert torch.equal(plain.nodes[site]["value"], sized.nodes[site]["value"])
    assert plain.nodes["x"]["is_observed"] and torch.equal(plain.nodes["x"]["value"], data)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_traverses_from_its_prior_without_data(name: str) -> None:
    """The traversal from the prior (``model.decoder_input``) works for every registered model: a
    label model draws the class it is given (and refuses one it has not), the others refuse one."""
    from pyro_vae import plots

    spec = small(name)
    m = spec.build()
    images, rows, score = plots.traversal_images(m, steps=3)
    assert images.shape == (len(rows), 3, *X_SHAPE) and torch.isfinite(images).all()
    assert len(score) >= len(rows) and (score >= 0).all()
    if spec.labelled:
        other = plots.traversal_images(m, steps=3, label=K - 1)[0]
        assert not torch.equal(images, other)  # the class reaches the decoder
        with pytest.raises(ConfigError, match=f"0..{K - 1}"):
            plots.traversal_images(m, label=K)
    else:
        with pytest.raises(ConfigError, match="not conditioned on labels"):
            plots.traversal_images(m, label=0)
