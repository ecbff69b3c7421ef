"""Priors p(z)."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import pyro.distributions as dist
from torch import nn

from ..describe import Described
from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from ..models.vae import VAE


class Prior(Described, nn.Module):
    """``forward()`` returns p(z) with event shape ``(latent_dim,)`` and empty batch shape.

    The model broadcasts it over the data plate. Priors that depend on other parts of the model
    (the VampPrior uses the encoder) get them in :meth:`attach`, called once by the model.
    """

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        if (
            isinstance(latent_dim, bool)
            or not isinstance(latent_dim, numbers.Integral)
            or latent_dim < 1
        ):
            raise ConfigError(
                f"the latent size must be a positive integer, got {latent_dim!r}; "
                "pass a positive --latent-dim"
            )
        self.latent_dim = int(latent_dim)

    @property
    def _owner(self) -> str:
        """``"the <registered name> prior"``, for messages about its options."""
        for name in PRIORS.names():
            if PRIORS.get(name) is type(self):
                return f"the {name} prior"
        return f"the {type(self).__name__} prior"

    def forward(self) -> dist.TorchDistribution:
        raise NotImplementedError

    def attach(self, model: VAE) -> None:
        """Hook for priors built from the model's own networks; the default needs nothing."""


PRIORS: Registry[Prior] = Registry("prior", base=Prior, supplied=("latent_dim",))
