from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError, DataError
from ..guides import GUIDES, AmortizedGuide
from ..likelihoods import LIKELIHOODS, Likelihood
from ..nn import NETWORKS, observation, observation_mean
from ..priors import PRIORS, Prior
from .base import MODELS, Model, check_parts, part_options, unique_name

if TYPE_CHECKING:
    from ..config import ModelConfig


class VAE(Model):
    r"""The variational autoencoder of Kingma and Welling (2014) as a Pyro model/guide pair.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                         # prior, default N(0, I)
        x_n ~ p(x | decoder(z_n))          # likelihood, default Bernoulli(logits=decoder(z_n))

    Inference (``guide``)::

        z_n ~ q(z | encoder(x_n))          # guide family, default N(mu, diag sigma^2)

    Every part is swappable: pass a registered name (``guide="diagonal"``) or an object
    (``guide=MyGuide(...)``, checked to fit the encoder and latent size). ``prior_dim`` is the size of
    the prior's latent where it differs from q's (the hierarchical VAE's top layer). ``name`` is the
    model's name in Pyro's parameter store, unique per object unless given. ``encoder`` must map ``(..., *x_shape)`` to ``(..., feature_dim)`` and expose
    ``feature_dim``; ``decoder`` must map ``(..., latent_dim)`` to the likelihood's parameters
    ``(..., *likelihood.out_shape)``, or be a :class:`~pyro_vae.nn.Decoder`. ``network_options`` are the
    network family's own (``channels=64`` for ``resnet``).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int = 20,
        *,
        network: str = "mlp",
        network_options: Mapping[str, Any] | None = None,
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
        name: str | None = None,
        prior_dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(f"the latent size must be a positive integer, got {latent_dim!r}")
        if any(int(h) < 1 for h in hidden):
            raise ConfigError(f"hidden layer sizes must be positive, got {tuple(hidden)}")
        self.x_shape = tuple(int(s) for s in x_shape)
        self.latent_dim = latent_dim
        # one name per object in Pyro's global parameter store, so two models never share parameters
        self.name = name if name is not None else unique_name("vae")
        self.likelihood = LIKELIHOODS.resolve(
            likelihood, x_shape=self.x_shape, **(likelihood_options or {})
        )
        nets = NETWORKS.build(network, **(network_options or {}))
        self.encoder = (
            encoder if encoder is not None else nets.encoder(self.x_shape, hidden, activation)
        )
        self.decoder = (
            decoder
            if decoder is not None
            else nets.decoder(
                latent_dim, self.x_shape, hidden, activation, self.likelihood.out_shape
            )
        )
        feature_dim = getattr(self.encoder, "feature_dim", None)
        if feature_dim is None:
            raise ConfigError("a custom encoder must have an integer attribute `feature_dim`")
        self.q = GUIDES.resolve(
            guide, feature_dim=feature_dim, latent_dim=latent_dim, **(guide_options or {})
        )
        self.prior = PRIORS.resolve(
            prior, latent_dim=prior_dim or latent_dim, **(prior_options or {})
        )
        check_parts(self.q, self.prior, feature_dim, latent_dim, prior_dim)
        self.prior.attach(self)

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> VAE:
        return cls(x_shape, config.latent_dim, **part_options(config), **config.model_options)

    # -- the Pyro model/guide pair -------------------------------------------------------------
    def model(self, x: torch.Tensor | None = None, *, size: int | None = None) -> None:
        """p(z) p(x|z) over the plate ``data``: scores ``x`` when given, else draws ``size`` data.

        With ``x=None`` the site ``x`` is sampled, so ``Predictive(vae.model, num_samples=S)(size=n)``
        returns ``"x"`` of shape ``(S, n, *x_shape)``, draws from p(x).
        """
        n = _plate_size(x, size)
        pyro.module(self.name, self)
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.decode(z), obs=x)

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
        return observation(self.decoder, self.likelihood, z)

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.q.mean(self.encoder(x))

    def decode_mean(self, z: torch.Tensor) -> torch.Tensor:
        return observation_mean(self.decoder, self.likelihood, z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The expected datum under p(x | z = point summary of q(z|x))."""
        return self.decode_mean(self.latent_mean(x))

    def sample(self, n: int) -> torch.Tensor:
        """Expected data for ``n`` latents drawn from the prior."""
        z = self.prior().sample((n,))
        return self.decode_mean(z)

    def onnx_graphs(self) -> dict[str, tuple[Any, tuple[int, ...]]]:
        return {
            "encoder": (self.encode, self.x_shape),
            "decoder": (self.decode, (self.latent_dim,)),
        }

    def check_data(self, x: torch.Tensor) -> None:
        """Fail early, with a message, on data this model cannot score."""
        super().check_data(x)
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or infinite values; clean or impute them first")
        self.likelihood.check(x)


def _plate_size(
    x: torch.Tensor | None,
    size: int | None,
    y: torch.Tensor | None = None,
    *,
    labelled: bool = False,
) -> int:
    """The size of a model's plate ``data``: the batch size of ``x`` when it is given (of the labels
    ``y`` when only they are, for a ``labelled`` model), else ``size``, how many data to generate.

    :class:`ConfigError` when nothing sizes the plate, when ``size`` is not a positive integer, or
    when it disagrees with the batch size of the data (or labels) given.
    """
    if size is not None:
        try:
            valid = not isinstance(size, bool) and operator.index(size) >= 1
        except TypeError:
            valid = False
        if not valid:
            raise ConfigError(f"size must be a positive integer (data to generate), got {size!r}")
        size = operator.index(size)
    given, what = (x, "x") if x is not None else (y, "y")
    if given is None:
        if size is None:
            how = "size=N, or labels y=... to draw class-conditional data" if labelled else "size=N"
            raise ConfigError(
                f"model(x=None) generates data, so it needs to know how many: pass {how}"
            )
        return size
    n = int(given.shape[0])
    if size is not None and size != n:
        raise ConfigError(
            f"size={size} disagrees with the batch size {n} of the {what} given; drop size"
        )
    return n


MODELS.register("vae")(VAE)
