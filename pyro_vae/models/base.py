"""Registry of generative models, built from a :class:`~pyro_vae.config.ModelConfig`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from ..registry import Registry

if TYPE_CHECKING:
    from ..config import ModelConfig

#: name -> ``factory(config, x_shape, num_classes) -> nn.Module`` with ``model`` and ``guide`` methods
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def part_options(config: ModelConfig) -> dict[str, Any]:
    """The constructor keywords every model shares: its networks, guide, prior and likelihood."""
    return dict(
        network=config.network,
        hidden=config.hidden,
        activation=config.activation,
        guide=config.guide,
        guide_options=config.guide_options,
        prior=config.prior,
        prior_options=config.prior_options,
        likelihood=config.likelihood,
        likelihood_options=config.likelihood_options,
    )


def build_model(config: ModelConfig, x_shape: Sequence[int], num_classes: int | None) -> nn.Module:
    return MODELS.get(config.model)(config, tuple(x_shape), num_classes)
