"""Prior options out of range are refused when the prior is built, with a one-line ConfigError naming
the option, both through the registry (the CLI's ``--prior-opt``) and by calling the class directly.
Iterated over the registry: a new prior's numeric options must have bad values listed in ``BAD``."""

from __future__ import annotations

import pytest
import torch

from pyro_vae import PRIORS, VAE

from ..validation import bad_option_cases, refused

LATENT = 3
INF, NAN = float("inf"), float("nan")

#: option -> values every prior taking it must refuse
BAD: dict[str, list] = {
    "num_flows": [0, -1],
    "hidden": [(0,), (8, -4), ()],
    "count_bins": [1, 0, -3],
    "bound": [0.0, -1.0, INF, NAN],
    "components": [0, -1],
    "init_spread": [-0.5, INF, NAN],
    "num_pseudo": [0, -1],
    "init_std": [-0.01, INF, NAN],
    "init_mean": [INF, NAN, -5.0, 2.0],  # outside [0, 1] with the default bounded=True
}
#: options that are not sizes or scales (checked by their own tests, or any value is valid)
NOT_NUMERIC = {"kind", "bounded"}


def _options(name: str) -> list[str]:
    return list(PRIORS.parameters(name))


CASES = bad_option_cases(PRIORS, BAD)
_refused = refused


@pytest.mark.parametrize(("name", "option", "value"), CASES)
def test_out_of_range_options_are_refused_by_the_registry(name: str, option: str, value) -> None:
    _refused(lambda: PRIORS.build(name, latent_dim=LATENT, **{option: value}), option)


@pytest.mark.parametrize(("name", "option", "value"), CASES)
def test_out_of_range_options_are_refused_by_the_class(name: str, option: str, value) -> None:
    _refused(lambda: PRIORS.get(name)(LATENT, **{option: value}), option)


@pytest.mark.parametrize("name", PRIORS.names())
def test_every_numeric_option_has_bad_values_listed(name: str) -> None:
    unlisted = set(_options(name)) - set(BAD) - NOT_NUMERIC
    assert not unlisted, f"add the {name} prior's options {unlisted} to BAD (or NOT_NUMERIC)"


@pytest.mark.parametrize("name", PRIORS.names())
@pytest.mark.parametrize("latent_dim", [0, -1, 2.5, True])
def test_the_latent_size_must_be_a_positive_integer(name: str, latent_dim) -> None:
    _refused(lambda: PRIORS.get(name)(latent_dim), "latent size")


@pytest.mark.parametrize("kind", ["autoregressive", "spline"])
def test_spline_settings_are_checked_for_either_flow_kind(kind: str) -> None:
    _refused(lambda: PRIORS.build("flow", latent_dim=LATENT, kind=kind, bound=0.0), "bound")
    _refused(lambda: PRIORS.build("flow", latent_dim=LATENT, kind=kind, count_bins=1), "count_bins")


def test_identical_starts_that_could_never_separate_are_refused() -> None:
    # equal components (or pseudo-inputs) get equal gradients and stay equal through training
    _refused(lambda: PRIORS.build("mixture", latent_dim=LATENT, init_spread=0.0), "init_spread")
    _refused(lambda: PRIORS.build("vamp", latent_dim=LATENT, init_std=0.0), "init_std")
    # ... but with a single one there is nothing to separate
    PRIORS.build("mixture", latent_dim=LATENT, components=1, init_spread=0.0)
    PRIORS.build("vamp", latent_dim=LATENT, num_pseudo=1, init_std=0.0)


def test_an_unbounded_vampprior_may_start_anywhere() -> None:
    PRIORS.build("vamp", latent_dim=LATENT, init_mean=-5.0, bounded=False)


@pytest.mark.parametrize("name", PRIORS.names())
def test_the_edges_of_the_ranges_are_accepted(name: str) -> None:
    edges = {
        "num_flows": 1,
        "hidden": (1,),
        "count_bins": 2,
        "bound": 1e-3,
        "components": 1,
        "num_pseudo": 1,
        "init_spread": 1e-6,
        "init_std": 1e-6,
        "init_mean": 0.0,
    }
    options = {k: v for k, v in edges.items() if k in _options(name)}
    torch.manual_seed(0)
    vae = VAE((1, 2, 2), LATENT, hidden=(8,), prior=name, prior_options=options)
    p = vae.prior()
    assert p.event_shape == (LATENT,)
    assert torch.isfinite(p.log_prob(torch.zeros(2, LATENT))).all()


def test_cli_strings_reach_the_same_checks() -> None:
    _refused(lambda: PRIORS.build("flow", latent_dim=LATENT, hidden="16,0"), "hidden")
    _refused(lambda: PRIORS.build("vamp", latent_dim=LATENT, init_std="-1"), "init_std")
    _refused(lambda: PRIORS.build("mixture", latent_dim=LATENT, init_spread="-1"), "init_spread")
