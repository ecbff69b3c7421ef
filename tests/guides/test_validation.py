"""Guide options out of range are refused when the guide is built, with a one-line ConfigError naming
the option, both through the registry (the CLI's ``--guide-opt``) and by calling the class directly.
Iterated over the registry: a new guide's numeric options must have bad values listed in ``BAD``.
Also the gaussian likelihood's ``scale`` (``--likelihood-opt``), the other option computed from."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import softplus

from pyro_vae import GUIDES, LIKELIHOODS, VAE, ConfigError

from ..validation import bad_option_cases, refused

FEATURES, LATENT = 8, 3
INF, NAN = float("inf"), float("nan")

#: option -> values every guide taking it must refuse (LATENT = 3 latents)
BAD: dict[str, list] = {
    "min_scale": [0.0, -1e-3, INF, NAN],
    "num_flows": [0, -1],
    "hidden": [(0,), (8, -4)],
    "rank": [0, -1, LATENT + 1, 1000],
    "count_bins": [1, 0, -3],
    "bound": [0.0, -1.0, INF, NAN],
    "columns": [0, LATENT + 1],
    "num_householder": [0, -2],
}
#: options that are not sizes or scales (checked by their own tests, or any value is valid)
NOT_NUMERIC = {"kind", "order", "stable", "centred"}


def _options(name: str) -> list[str]:
    return list(GUIDES.parameters(name))


CASES = bad_option_cases(GUIDES, BAD)
_refused = refused


@pytest.mark.parametrize(("name", "option", "value"), CASES)
def test_out_of_range_options_are_refused_by_the_registry(name: str, option: str, value) -> None:
    _refused(
        lambda: GUIDES.build(name, feature_dim=FEATURES, latent_dim=LATENT, **{option: value}),
        option,
    )


@pytest.mark.parametrize(("name", "option", "value"), CASES)
def test_out_of_range_options_are_refused_by_the_class(name: str, option: str, value) -> None:
    # the registry refuses non-finite numbers before the class sees them; a Python caller does not
    _refused(lambda: GUIDES.get(name)(FEATURES, LATENT, **{option: value}), option)


@pytest.mark.parametrize("name", GUIDES.names())
def test_every_numeric_option_has_bad_values_listed(name: str) -> None:
    unlisted = set(_options(name)) - set(BAD) - NOT_NUMERIC
    assert not unlisted, f"add the {name} guide's options {unlisted} to BAD (or NOT_NUMERIC)"


@pytest.mark.parametrize("name", GUIDES.names())
@pytest.mark.parametrize("latent_dim", [0, -1, 2.5, True])
def test_the_latent_size_must_be_a_positive_integer(name: str, latent_dim) -> None:
    _refused(lambda: GUIDES.get(name)(FEATURES, latent_dim), "latent size")


@pytest.mark.parametrize("name", GUIDES.names())
def test_the_edges_of_the_ranges_are_accepted(name: str) -> None:
    edges = {
        "rank": LATENT,  # a full covariance
        "num_flows": 1,
        "count_bins": 2,
        "columns": LATENT,  # (the orthogonal kind's; the householder kind's edge is below)
        "min_scale": 1e-12,
        "hidden": (1,),
    }
    options = {k: v for k, v in edges.items() if k in _options(name)}
    q = GUIDES.build(name, feature_dim=FEATURES, latent_dim=LATENT, **options)
    z = q(torch.randn(2, FEATURES)).rsample()
    assert z.shape == (2, LATENT)


def test_the_householder_kinds_edge_is_accepted_and_the_other_kinds_option_refused() -> None:
    q = GUIDES.build(
        "sylvester", feature_dim=FEATURES, latent_dim=LATENT, kind="householder", num_householder=1
    )
    assert q(torch.randn(2, FEATURES)).rsample().shape == (2, LATENT)
    # each kind's option is refused under the other kind, where it would change nothing
    _refused(
        lambda: GUIDES.build(
            "sylvester", feature_dim=FEATURES, latent_dim=LATENT, kind="householder", columns=2
        ),
        "columns",
    )
    _refused(
        lambda: GUIDES.build(
            "sylvester", feature_dim=FEATURES, latent_dim=LATENT, num_householder=2
        ),
        "num_householder",
    )


@pytest.mark.parametrize("name", ["iaf", "spline"])
def test_autoregressive_guides_need_a_hidden_layer(name: str) -> None:
    # MADE needs one: Pyro's AutoRegressiveNN fails with an IndexError without it
    _refused(
        lambda: GUIDES.build(name, feature_dim=FEATURES, latent_dim=LATENT, hidden=()), "hidden"
    )


@pytest.mark.parametrize("name", ["planar", "radial", "sylvester"])
def test_amortizing_by_a_linear_map_stays_allowed(name: str) -> None:
    GUIDES.build(name, feature_dim=FEATURES, latent_dim=LATENT, hidden=())


def test_a_lowrank_rank_beyond_the_latent_size_is_refused_in_the_model() -> None:
    # --guide lowrank --guide-opt rank=1000 with 20 latents
    with pytest.raises(ConfigError, match=r"rank must be an integer in 1\.\.20.*got 1000") as e:
        VAE((1, 4, 4), 20, hidden=(8,), guide="lowrank", guide_options={"rank": 1000})
    assert "\n" not in str(e.value) and "--guide-opt rank" in str(e.value)


def test_cli_strings_reach_the_same_checks() -> None:
    # --guide-opt values arrive as strings and are coerced before the guide checks them
    _refused(lambda: GUIDES.build("lowrank", feature_dim=8, latent_dim=20, rank="1000"), "rank")
    _refused(
        lambda: GUIDES.build("diagonal", feature_dim=8, latent_dim=2, min_scale="0"), "min_scale"
    )
    _refused(lambda: GUIDES.build("planar", feature_dim=8, latent_dim=2, hidden="16,0"), "hidden")


# --- the gaussian likelihood's scale (--likelihood-opt scale=...) ---


@pytest.mark.parametrize(
    "scale", [1e-300, 1e-8, 1e-3, 0.1, 1.0, 20.0, 50.0, 709.0, 710.0, 1000.0, 1e6, 1e30]
)
def test_the_inverse_softplus_is_stable(scale: float) -> None:
    from pyro_vae.likelihoods.gaussian import softplus_inverse

    raw = softplus_inverse(scale)
    assert math.isfinite(raw)
    back = float(softplus(torch.tensor(raw, dtype=torch.float64)))
    assert back == pytest.approx(scale, rel=1e-12)
    if scale < 700:  # where the textbook formula does not overflow, the two agree
        assert raw == pytest.approx(math.log(math.expm1(scale)), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("learn_scale", [False, True])
@pytest.mark.parametrize("scale", [1e-3, 0.1, 1000.0, 1e6])
def test_the_gaussian_starts_at_its_scale(scale: float, learn_scale: bool) -> None:
    lik = LIKELIHOODS.build("gaussian", x_shape=(1, 2, 2), scale=scale, learn_scale=learn_scale)
    assert torch.isfinite(lik.raw_scale).all()
    assert torch.allclose(
        lik.scale.double(), torch.full((1, 2, 2), scale + 1e-4, dtype=torch.float64), rtol=1e-6
    )
    lp = lik.dist(torch.zeros(3, 1, 2, 2)).log_prob(torch.full((3, 1, 2, 2), 0.5))
    assert torch.isfinite(lp).all()


@pytest.mark.parametrize("scale", [0.0, -1.0, INF, -INF, NAN, 1e39, True, "0.1"])
def test_a_bad_gaussian_scale_is_refused(scale) -> None:
    from pyro_vae.likelihoods import Gaussian

    _refused(lambda: Gaussian((1, 2, 2), scale=scale), "scale")


@pytest.mark.parametrize("scale", ["0", "-1", "inf", "nan", "1e39"])
def test_a_bad_gaussian_scale_option_is_refused(scale: str) -> None:
    _refused(lambda: LIKELIHOODS.build("gaussian", x_shape=(4,), scale=scale), "scale")
