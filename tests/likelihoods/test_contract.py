"""The contract every registered likelihood meets, driven by the registry (new entries are tested
for free): the decoder output it asks for (``out_shape``) gives a distribution over one datum, with a
finite log-probability and gradient, a mean of the data's shape, samples of the data's shape; and a
likelihood that declares ``discrete_bins`` is a probability mass function over those levels."""

from __future__ import annotations

import itertools

import pytest
import torch

from pyro_vae.likelihoods import LIKELIHOODS, Likelihood

SMALL = {"components": 3}
SHAPES = [(1, 3, 2), (3, 2, 2), (5,)]


def build(name: str, x_shape) -> Likelihood:
    params = LIKELIHOODS.parameters(name)
    return LIKELIHOODS.build(
        name, x_shape=x_shape, **{k: v for k, v in SMALL.items() if k in params}
    )


def data(like: Likelihood, n: int, g: torch.Generator) -> torch.Tensor:
    bins = like.discrete_bins or 256
    return torch.randint(0, bins, (n, *like.x_shape), generator=g).float() / (bins - 1)


@pytest.mark.parametrize("x_shape", SHAPES)
@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_every_likelihood_is_a_distribution_over_one_datum(name, x_shape) -> None:
    g = torch.Generator().manual_seed(0)
    like = build(name, x_shape)
    assert isinstance(like, Likelihood)
    out = torch.randn(2, 4, *like.out_shape, generator=g, requires_grad=True)
    d = like(out)
    assert tuple(d.event_shape) == x_shape and tuple(d.batch_shape) == (2, 4)
    x = data(like, 4, g)
    like.check(x)
    lp = d.log_prob(x)
    assert lp.shape == (2, 4) and torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    assert like.mean(out).shape == (2, 4, *x_shape)
    assert d.sample().shape == (2, 4, *x_shape)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_a_discrete_likelihood_sums_to_one_over_its_levels(name) -> None:
    """Every datum of two pixels x two channels on the declared levels: the masses sum to 1."""
    probe = build(name, (2, 1, 2))
    if probe.discrete_bins is None:
        pytest.skip(f"{name} is not a distribution over quantized data (discrete_bins is None)")
    bins = probe.discrete_bins
    if bins > 8:
        pytest.skip("8-bit levels: summed in float64 by the distribution's own tests")
    grid = torch.arange(bins, dtype=torch.float64) / (bins - 1)
    x = torch.tensor(list(itertools.product(grid.tolist(), repeat=4)), dtype=torch.float64)
    x = x.reshape(-1, 2, 1, 2)
    out = torch.randn(*probe.out_shape, dtype=torch.float64)
    total = probe.to(torch.float64)(out).log_prob(x).exp().sum()
    assert abs(float(total) - 1) < 1e-9


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_low_bit_discrete_likelihoods_sum_to_one(name) -> None:
    params = LIKELIHOODS.parameters(name)
    if "bits" not in params:
        pytest.skip(f"{name} has a fixed number of levels")
    like = LIKELIHOODS.build(
        name, x_shape=(2, 1, 2), bits=2, **{k: v for k, v in SMALL.items() if k in params}
    )
    assert like.discrete_bins == 4
    grid = torch.arange(4, dtype=torch.float64) / 3
    x = torch.tensor(list(itertools.product(grid.tolist(), repeat=4)), dtype=torch.float64)
    out = torch.randn(3, 1, *like.out_shape, dtype=torch.float64)
    total = like(out).log_prob(x.reshape(-1, 2, 1, 2)).exp().sum(-1)
    assert torch.allclose(total, torch.ones(3, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_discrete_bins_is_declared(name) -> None:
    like = build(name, (1, 2, 2))
    bins = like.discrete_bins
    assert bins is None or (isinstance(bins, int) and bins >= 2)


@pytest.mark.parametrize("name", LIKELIHOODS.names())
def test_discrete_bins_agrees_with_the_support(name) -> None:
    """``discrete_bins`` (the declaration) and the distribution's support (what bits per dimension
    and the complexity score read from a model's trace) say the same thing."""
    like = build(name, (1, 2, 2))
    support = like(torch.zeros(like.out_shape)).support
    assert support.is_discrete == (like.discrete_bins is not None)
    if like.discrete_bins is not None:
        bins = like.discrete_bins
        on = torch.arange(4.0).reshape(1, 2, 2) % bins / (bins - 1)
        assert bool(support.check(on))
        off = torch.full((1, 2, 2), 0.5 / (bins - 1))  # half way between two levels
        assert not bool(support.check(off))
