"""The discretized logistic and its mixture against exact references.

References: the logistic CDF in 50-digit arithmetic (mpmath) for single bins, including bins whose
mass underflows float32 cancellation; PixelCNN++'s published loss transcribed by hand (data on
[-1, 1], its edge and tiny-bin branches) for a coupled RGB mixture; exhaustive sums over every level.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import pytest
import torch

from pyro_vae import ConfigError
from pyro_vae.errors import DataError
from pyro_vae.likelihoods import (
    LIKELIHOODS,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
)
from pyro_vae.likelihoods.discretized import log_bin_mass, quantize

mpmath.mp.dps = 50


def levels(bits: int, dtype=torch.float64) -> torch.Tensor:
    top = 2**bits - 1
    return torch.arange(top + 1, dtype=dtype) / top


@pytest.mark.parametrize("bits", [8, 5, 1])
def test_the_levels_probabilities_sum_to_one(bits) -> None:
    g = torch.Generator().manual_seed(bits)
    loc = torch.rand(200, 1, generator=g, dtype=torch.float64) * 2 - 0.5
    log_scale = torch.rand(200, 1, generator=g, dtype=torch.float64) * 11 - 8
    lp = log_bin_mass(levels(bits), loc, log_scale, bits)  # (200, levels)
    total = lp.exp().sum(-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6, rtol=0), total


def logistic_cdf(t):
    return 1 / (1 + mpmath.exp(-t))


def reference_log_mass(x: float, mu: float, log_s: float, bits: int) -> float:
    """log P(level x) from the logistic CDF in 50-digit arithmetic."""
    top = 2**bits - 1
    s, h = mpmath.exp(log_s), mpmath.mpf(1) / (2 * top)
    k = round(x * top)
    upper = 1 if k == top else logistic_cdf((mpmath.mpf(x) - mu + h) / s)
    lower = 0 if k == 0 else logistic_cdf((mpmath.mpf(x) - mu - h) / s)
    return float(mpmath.log(upper - lower))


def test_the_edges_are_the_tails_in_closed_form() -> None:
    loc = torch.tensor([0.1, 0.5, 0.97], dtype=torch.float64)
    log_scale = torch.tensor([-3.0, -1.0, -5.0], dtype=torch.float64)
    h = 0.5 / 255
    s = log_scale.exp()
    first = log_bin_mass(torch.zeros(3, dtype=torch.float64), loc, log_scale, 8)
    last = log_bin_mass(torch.ones(3, dtype=torch.float64), loc, log_scale, 8)
    assert torch.allclose(first, torch.log(torch.sigmoid((h - loc) / s)), atol=1e-12)
    assert torch.allclose(last, torch.log(1 - torch.sigmoid((1 - h - loc) / s)), atol=1e-12)


@pytest.mark.parametrize(
    ("x", "mu", "log_s"),
    [
        (17 / 255, 0.4, -2.0),
        (128 / 255, 0.5, -6.0),
        (0.0, 0.3, -2.5),
        (1.0, 0.2, -3.0),
        (3 / 255, 0.95, -4.0),  # mass ~ exp(-190): no float32 difference of CDFs can hold it
        (250 / 255, 0.02, -5.0),  # ~ exp(-1e2) in the other tail
        (0.5, 0.5, 5.0),  # a very wide logistic: bins of mass ~ 1/(4 s) * width
    ],
)
def test_single_bins_match_the_cdf_in_high_precision(x, mu, log_s) -> None:
    expected = reference_log_mass(x, mu, log_s, 8)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-4)):
        got = log_bin_mass(
            torch.tensor(x, dtype=dtype),
            torch.tensor(mu, dtype=dtype),
            torch.tensor(log_s, dtype=dtype),
            8,
        )
        assert math.isfinite(float(got))
        assert abs(float(got) - expected) <= tol * max(1.0, abs(expected)), (dtype, got, expected)


def test_the_gradient_is_finite_at_extreme_scales_and_locations() -> None:
    x = levels(8, torch.float32)[torch.tensor([0, 1, 77, 128, 254, 255])].repeat(4)
    loc = torch.tensor([-50.0, 0.5, 50.0, 0.999]).repeat_interleave(6).requires_grad_()
    log_scale = torch.tensor([-30.0, -9.0, 7.0, 30.0]).repeat(6).requires_grad_()
    lp = log_bin_mass(x, loc, log_scale, 8)
    assert torch.isfinite(lp).all()
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(log_scale.grad).all()


def pixelcnnpp_log_prob(x: torch.Tensor, params: torch.Tensor, nr_mix: int) -> torch.Tensor:
    """PixelCNN++'s discretized_mix_logistic_loss (Salimans et al. 2017, openai/pixel-cnn),
    transcribed by hand: RGB pixels in [-1, 1], channels last, ``params`` of
    ``nr_mix * 10`` per pixel (logits, then per channel means, log-scales, tanh coefficients).
    Returns log p per pixel (not negated, not summed)."""
    logit_probs = params[..., :nr_mix]
    l = params[..., nr_mix:].reshape(*x.shape, nr_mix * 3)  # noqa: E741
    means = l[..., :nr_mix]
    log_scales = torch.clamp(l[..., nr_mix : 2 * nr_mix], min=-7.0)
    coeffs = torch.tanh(l[..., 2 * nr_mix : 3 * nr_mix])
    x = x.unsqueeze(-1).expand(*x.shape, nr_mix)
    m2 = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    m3 = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    means = torch.stack([means[..., 0, :], m2, m3], -2)
    centered = x - means
    inv = torch.exp(-log_scales)
    plus_in = inv * (centered + 1 / 255)
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv * (centered - 1 / 255)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - torch.nn.functional.softplus(plus_in)
    log_one_minus_cdf_min = -torch.nn.functional.softplus(min_in)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv * centered
    log_pdf_mid = mid_in - log_scales - 2 * torch.nn.functional.softplus(mid_in)
    log_probs = torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(
            x > 0.999,
            log_one_minus_cdf_min,
            torch.where(
                cdf_delta > 1e-5,
                torch.log(torch.clamp(cdf_delta, min=1e-12)),
                log_pdf_mid - math.log(127.5),
            ),
        ),
    )
    log_probs = log_probs.sum(-2) + torch.log_softmax(logit_probs, -1)
    return torch.logsumexp(log_probs, -1)


def test_the_rgb_mixture_matches_pixelcnnpp() -> None:
    """One configuration of a coupled RGB mixture against PixelCNN++'s own formula, in float64.

    Their data live on [-1, 1] (bins 2/255 wide): the same model as ours on [0, 1] with locations
    mapped by ``(m + 1) / 2`` and scales halved (log-scale minus log 2); log-masses are equal.
    """
    g = torch.Generator().manual_seed(0)
    k, h, w = 4, 3, 5
    x01 = torch.randint(0, 256, (2, 3, h, w), generator=g).double() / 255
    x_pm = x01 * 2 - 1
    l = torch.randn(2, h, w, 10 * k, generator=g, dtype=torch.float64)  # noqa: E741
    l[..., k:] *= 0.6  # keep the scales where neither formula clamps them (log-scale > -7)
    theirs = pixelcnnpp_log_prob(x_pm.permute(0, 2, 3, 1), l, k).sum((-1, -2))

    logits = l[..., :k].permute(0, 3, 1, 2)
    rest = l[..., k:].reshape(2, h, w, 3, 3 * k)
    means_pm = rest[..., :k].permute(0, 4, 3, 1, 2)  # (2, K, C, H, W)
    log_scales_pm = rest[..., k : 2 * k].permute(0, 4, 3, 1, 2)
    coeffs = torch.tanh(rest[..., 2 * k :]).permute(0, 4, 3, 1, 2)  # pairs (G|R), (B|R), (B|G)
    # on [0, 1], x01 = (x_pm + 1) / 2: their G mean mu + c x_pm_R is (mu + 1) / 2 - c / 2 + c x01_R
    # on our scale, so each coupled channel's location moves by minus half its coefficients
    locs = (means_pm + 1) / 2
    offset = torch.stack(
        [
            torch.zeros_like(coeffs[:, :, 0]),
            -coeffs[:, :, 0] / 2,
            -(coeffs[:, :, 1] + coeffs[:, :, 2]) / 2,
        ],
        2,
    )
    ours = DiscretizedLogisticMixture(
        logits, locs + offset, log_scales_pm - math.log(2), coeffs, bits=8
    ).log_prob(x01)
    assert torch.allclose(ours, theirs, atol=1e-6), (ours, theirs)


def test_a_coupled_mixture_is_normalised_over_every_rgb_level() -> None:
    g = torch.Generator().manual_seed(1)
    bits, k = 3, 3
    grid = levels(bits)
    pixels = torch.tensor(list(itertools.product(grid.tolist(), repeat=3)), dtype=torch.float64)
    x = pixels.reshape(-1, 3, 1, 1)  # every RGB pixel: 512 of them
    logits = torch.randn(k, 1, 1, generator=g, dtype=torch.float64)
    locs = torch.rand(k, 3, 1, 1, generator=g, dtype=torch.float64)
    log_scales = torch.rand(k, 3, 1, 1, generator=g, dtype=torch.float64) * 3 - 4
    coeffs = torch.rand(k, 3, 1, 1, generator=g, dtype=torch.float64) * 2 - 1
    d = DiscretizedLogisticMixture(logits, locs, log_scales, coeffs, bits=bits)
    total = d.log_prob(x).exp().sum()
    assert abs(float(total) - 1) < 1e-9


def test_samples_follow_the_probabilities() -> None:
    torch.manual_seed(0)
    bits = 2
    grid = levels(bits)
    logits = torch.tensor([[[0.3]], [[-0.5]]], dtype=torch.float64)
    locs = torch.tensor([[0.2, 0.7, 0.4], [0.8, 0.1, 0.6]], dtype=torch.float64)[..., None, None]
    log_scales = torch.full((2, 3, 1, 1), -1.5, dtype=torch.float64)
    coeffs = torch.tensor([[0.5, -0.4, 0.3], [-0.6, 0.2, 0.7]], dtype=torch.float64)[
        ..., None, None
    ]
    d = DiscretizedLogisticMixture(logits, locs, log_scales, coeffs, bits=bits)
    n = 40000
    draws = d.sample((n,)).reshape(n, 3)
    pixels = torch.tensor(list(itertools.product(grid.tolist(), repeat=3)), dtype=torch.float64)
    p = d.log_prob(pixels.reshape(-1, 3, 1, 1)).exp()
    counts = (draws[:, None, :] == pixels[None]).all(-1).sum(0).double()
    assert counts.sum() == n  # every draw is a level
    # each level's frequency within 5 binomial standard errors of its probability
    se = (p * (1 - p) / n).sqrt()
    assert ((counts / n - p).abs() <= 5 * se + 1e-4).all(), (counts / n, p)


def test_mean_and_mode_of_the_single_logistic() -> None:
    loc = torch.tensor([0.0, 0.31, 0.9, 1.2], dtype=torch.float64)
    log_scale = torch.tensor([-2.0, -4.0, -1.0, -3.0], dtype=torch.float64)
    d = DiscretizedLogistic(loc, log_scale, bits=8)
    grid = levels(8)[:, None]
    expected = (grid * log_bin_mass(grid, loc, log_scale, 8).exp()).sum(0)
    assert torch.allclose(d.mean, expected, atol=1e-10)
    assert (
        0 < float(d.mean[0]) < 0.1
    )  # a logistic centred on 0 has half its mass in the first level
    # the level nearest the location, except where a tail piled on an edge level weighs more
    assert (d.mode * 255).round().tolist() == [0.0, 79.0, 255.0, 255.0]
    assert torch.allclose(d.log_prob(d.mode), log_bin_mass(grid, loc, log_scale, 8).max(0).values)


@pytest.mark.parametrize("name", ["discretized-logistic", "logistic-mixture"])
def test_data_off_the_grid_are_refused_with_what_to_do(name) -> None:
    like = LIKELIHOODS.build(name, x_shape=(1, 2, 2))
    like.check(torch.tensor([0.0, 1.0, 3 / 255, 254 / 255]).reshape(1, 1, 2, 2))
    with pytest.raises(DataError, match="--binarize none") as e:
        like.check(torch.full((1, 1, 2, 2), 0.5))  # 127.5 / 255
    assert "\n" not in str(e.value)
    five = LIKELIHOODS.build(name, x_shape=(1, 2, 2), bits="5")
    five.check(torch.tensor([0.0, 1.0, 3 / 31, 30 / 31]).reshape(1, 1, 2, 2))
    with pytest.raises(DataError, match="32 levels"):
        five.check(torch.full((1, 1, 2, 2), 3 / 255))


@pytest.mark.parametrize(
    ("name", "opts"),
    [("discretized-logistic", {"bits": 0}), ("logistic-mixture", {"components": 0})],
)
def test_bad_options_are_refused(name, opts) -> None:
    with pytest.raises(ConfigError, match=next(iter(opts))):
        LIKELIHOODS.build(name, x_shape=(1, 2, 2), **opts)


@pytest.mark.parametrize("components, channels", [(4, 3), (3, 3), (2, 1)])
def test_the_mixture_mode_is_the_top_components_coupled_location_by_hand(
    components, channels
) -> None:
    """Written pixel by pixel: the most probable component's locations, each channel shifted by
    the modes of the channels before it, quantized."""
    g = torch.Generator().manual_seed(components * 10 + channels)
    pairs = channels * (channels - 1) // 2
    logits = torch.randn(2, components, 3, 2, generator=g)
    locs = torch.rand(2, components, channels, 3, 2, generator=g)
    coeffs = torch.rand(2, components, pairs, 3, 2, generator=g) - 0.5
    log_scales = torch.randn(2, components, channels, 3, 2, generator=g) - 3
    d = DiscretizedLogisticMixture(logits, locs, log_scales, coeffs, bits=8)
    want = torch.empty(2, channels, 3, 2)
    for b in range(2):
        for i in range(3):
            for j in range(2):
                k = int(logits[b, :, i, j].argmax())
                pair = 0
                for c in range(channels):
                    loc = locs[b, k, c, i, j]
                    for prev in range(c):
                        loc = loc + coeffs[b, k, pair, i, j] * want[b, prev, i, j]
                        pair += 1
                    want[b, c, i, j] = quantize(loc, 8)
    assert d.mode.shape == (2, channels, 3, 2)
    torch.testing.assert_close(d.mode, want, rtol=0, atol=1e-6)
