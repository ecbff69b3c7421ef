"""Registries: options typed from the factory's signature, objects checked where names go."""

from __future__ import annotations

import pytest
import torch

from pyro_vae import GUIDES, LIKELIHOODS, PRIORS, VAE, ConfigError
from pyro_vae.cli import train_config
from pyro_vae.guides import DiagonalNormal, PlanarFlow
from pyro_vae.priors import StandardNormal
from pyro_vae.registry import coerce


@pytest.mark.parametrize(
    ("text", "value"),
    [("False", False), ("false", False), ("FALSE", False), ("0", False), ("no", False)]
    + [("True", True), ("true", True), ("1", True), ("yes", True)],
)
def test_bool_options_are_parsed_whatever_the_spelling(text, value) -> None:
    assert GUIDES.options("planar", {"centred": text}) == {"centred": value}


def test_cli_guide_option_false_trains_the_papers_planar_flow() -> None:
    config = train_config(["--guide", "planar", "--guide-opt", "centred=False", "--flows", "3"])
    assert config.model.guide_options == {"centred": False, "num_flows": 3}
    vae = VAE((1, 4, 4), 2, hidden=(8,), **_parts(config))
    assert isinstance(vae.q, PlanarFlow) and vae.q.centred is False and vae.q.num_flows == 3


def _parts(config):
    m = config.model
    return dict(
        guide=m.guide,
        guide_options=m.guide_options,
        likelihood=m.likelihood,
        likelihood_options=m.likelihood_options,
    )


def test_cli_likelihood_option_false_keeps_the_scale_fixed() -> None:
    config = train_config(
        ["--likelihood", "gaussian", "--likelihood-opt", "learn_scale=False", "scale=0.5"]
    )
    assert config.model.likelihood_options == {"learn_scale": False, "scale": 0.5}
    vae = VAE((1, 4, 4), 2, hidden=(8,), **_parts(config))
    assert not any(n.startswith("likelihood") for n, _ in vae.named_parameters())
    assert torch.allclose(vae.likelihood.scale, torch.tensor(0.5), atol=1e-3)


def test_numbers_tuples_and_optionals_are_typed() -> None:
    assert GUIDES.options("sylvester", {"num_flows": "3", "columns": "none"}) == {
        "num_flows": 3,
        "columns": None,
    }
    assert GUIDES.options("planar", {"hidden": "16,8"}) == {"hidden": (16, 8)}
    assert LIKELIHOODS.options("gaussian", {"scale": "1e-2"}) == {"scale": 0.01}
    assert coerce("2", int | None, "x") == 2


@pytest.mark.parametrize(
    ("registry", "name", "options", "message"),
    [
        (GUIDES, "planar", {"centred": "maybe"}, "must be true or false, got 'maybe'"),
        (GUIDES, "planar", {"num_flows": "2.5"}, "must be an integer, got '2.5'"),
        (GUIDES, "planar", {"num_flows": True}, "must be an integer"),
        (LIKELIHOODS, "gaussian", {"scale": "small"}, "must be a finite number, got 'small'"),
        (LIKELIHOODS, "gaussian", {"scale": "nan"}, "must be a finite number"),
        (GUIDES, "diagonal", {"rank": "2"}, "guide 'diagonal' takes no option 'rank'"),
        (GUIDES, "planar", {"latent_dim": "2"}, "set by pyro-vae itself"),
        (PRIORS, "mixture", {"components": [1, 2]}, "must be an integer"),
    ],
)
def test_bad_options_are_refused_with_their_name(registry, name, options, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.options(name, options)


def test_a_prior_that_is_not_a_prior_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"a prior must be a registered name .* got Normal"):
        VAE((1, 4, 4), 2, hidden=(8,), prior=torch.distributions.Normal(0.0, 1.0))


def test_a_guide_class_instead_of_an_instance_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"DiagonalNormal was passed as a class; pass an instance"
    ):
        VAE((1, 4, 4), 2, hidden=(8,), guide=DiagonalNormal)


def test_a_guide_of_the_wrong_size_is_refused_when_the_model_is_built() -> None:
    with pytest.raises(
        ConfigError, match=r"feature_dim=16, latent_dim=2, but this model's encoder"
    ):
        VAE((1, 4, 4), 2, hidden=(8,), guide=DiagonalNormal(16, 2))
    with pytest.raises(ConfigError, match=r"latent_dim=2.*encoder gives 8 features"):
        VAE((1, 4, 4), 3, hidden=(8,), guide=DiagonalNormal(8, 2))
    with pytest.raises(ConfigError, match=r"prior StandardNormal has latent_dim=5"):
        VAE((1, 4, 4), 3, hidden=(8,), prior=StandardNormal(5))


def test_fitting_objects_are_accepted() -> None:
    q, p = DiagonalNormal(8, 3), StandardNormal(3)
    vae = VAE((1, 4, 4), 3, hidden=(8,), guide=q, prior=p)
    assert vae.q is q and vae.prior is p
