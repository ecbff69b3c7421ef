from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError, DataError
from ..guides import GUIDES, AmortizedGuide
from ..likelihoods import LIKELIHOODS, Likelihood
from ..nn import NETWORKS
from ..priors import PRIORS, Prior
from .base import MODELS, part_options

if TYPE_CHECKING:
    from ..config import ModelConfig


class VAE(nn.Module):
    r"""The variational autoencoder of Kingma and Welling (2014) as a Pyro model/guide pair.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                         # prior, default N(0, I)
        x_n ~ p(x | decoder(z_n))          # likelihood, default Bernoulli(logits=decoder(z_n))

    Inference (``guide``)::

        z_n ~ q(z | encoder(x_n))          # guide family, default N(mu, diag sigma^2)

    Every part is swappable: pass a registered name (``guide="diagonal"``) or an object
    (``guide=MyGuide(...)``). ``encoder`` must map ``(..., *x_shape)`` to ``(..., feature_dim)`` and expose
    ``feature_dim``; ``decoder`` must map ``(..., latent_dim)`` to ``(..., *x_shape)``.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int = 20,
        *,
        network: str = "mlp",
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        encoder: nn.Module | None = None,
        decoder: nn.Module | None = None,
        guide: str | AmortizedGuide = "diagonal",
        guide_options: Mapping[str, Any] | None = None,
        prior: str | Prior = "normal",
        prior_options: Mapping[str, Any] | None = None,
        likelihood: str | Likelihood = "bernoulli",
        likelihood_options: Mapping[str, Any] | None = None,
        name: str = "vae",
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(f"the latent size must be a positive integer, got {latent_dim!r}")
        if any(int(h) < 1 for h in hidden):
            raise ConfigError(f"hidden layer sizes must be positive, got {tuple(hidden)}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.latent_dim = latent_dim
        self.name = name
        nets = NETWORKS.build(network)
        self.encoder = (
            encoder if encoder is not None else nets.encoder(self.x_shape, hidden, activation)
        )
        self.decoder = (
            decoder
            if decoder is not None
            else nets.decoder(latent_dim, self.x_shape, hidden, activation)
        )
        feature_dim = getattr(self.encoder, "feature_dim", None)
        if feature_dim is None:
            raise ConfigError("a custom encoder must have an integer attribute `feature_dim`")
        self.q = GUIDES.resolve(
            guide, feature_dim=feature_dim, latent_dim=latent_dim, **(guide_options or {})
        )
        self.prior = PRIORS.resolve(prior, latent_dim=latent_dim, **(prior_options or {}))
        self.likelihood = LIKELIHOODS.resolve(
            likelihood, x_shape=self.x_shape, **(likelihood_options or {})
        )
        self.prior.attach(self)

    # -- the Pyro model/guide pair -------------------------------------------------------------
    def model(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.q(self.encoder(x)))

    # -- conveniences for plots and the CLI --------------------------------------------------------
    def encode(self, x: torch.Tensor) -> TorchDistribution:
        """q(z|x) for a batch."""
        return self.q(self.encoder(x))

    def decode(self, z: torch.Tensor) -> TorchDistribution:
        """p(x|z) for a batch of latents."""
        return self.likelihood(self.decoder(z))

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.q.mean(self.encoder(x))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return self.likelihood.mean(self.decoder(z))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The expected datum under p(x | z = point summary of q(z|x))."""
        return self.decode_mean(self.latent_mean(x))

    def sample(self, n: int) -> torch.Tensor:
        """Expected data for ``n`` latents drawn from the prior."""
        z = self.prior().sample((n,))
        return self.decode_mean(z)

    def check_data(self, x: torch.Tensor) -> None:
        """Fail early, with a message, on data this model cannot score."""
        if tuple(x.shape[1:]) != self.x_shape:
            raise DataError(
                f"the model expects data of shape (N, {', '.join(map(str, self.x_shape))}) "
                f"but got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or infinite values; clean or impute them first")
        self.likelihood.check(x)


@MODELS.register("vae")
def _build_vae(config: ModelConfig, x_shape: tuple[int, ...], num_classes: int | None) -> VAE:
    return VAE(x_shape, config.latent_dim, **part_options(config))
