from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions.transforms import AffineTransform

from ..errors import ConfigError
from ..guides import DiagonalNormal
from ..nn import mlp
from ..priors import PRIORS, Prior
from .base import KL_WEIGHTING, MODELS, check_size, part_options, unique_name
from .vae import VAE, _plate_size

if TYPE_CHECKING:
    from ..config import ModelConfig, RunConfig


class HierarchicalVAE(VAE):
    r"""A VAE with two stochastic layers, the two-layer architecture of Burda et al. (2016).

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z2_n ~ p(z2)                                   # prior, any registered prior
        z1_n ~ N(mu(z2_n), diag sigma(z2_n)^2)         # p(z1 | z2), an MLP of z2
        x_n  ~ p(x | decoder(z1_n))                    # likelihood

    Inference (``guide``)::

        z1_n ~ q(z1 | encoder(x_n))                    # any registered guide (flows included)
        z2_n ~ N(m(z1_n), diag s(z1_n)^2)              # q(z2 | z1), an MLP of z1

    ``latent_dim`` is the size of ``z1`` and ``latent_dim2`` that of ``z2`` (default half of it); the
    ``z1 <-> z2`` networks have two hidden layers of ``hidden2`` units (default half the last encoder
    width: Burda et al.'s 200-200 / 100-100 layout). The latent sites are ``"z1"`` and ``"z2"``.

    ``p(z1|z2)`` is written as an affine transform of a standard normal: its density is the same, but
    no closed-form KL is registered against it, so :class:`~pyro.infer.TraceMeanField_ELBO` estimates
    that term by Monte Carlo. The analytic KL would be wrong here, because the ``z2`` that ``p(z1|z2)``
    is conditioned on is drawn from ``q(z2|z1)``, i.e. it depends on ``z1``. (Pyro still warns that it
    cannot verify the mean-field ordering, since the guide must draw ``z1`` first.)
    The conveniences (``encode``, ``latent_mean``, ``reconstruct``, ...) work on ``z1``.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        latent_dim: int = 20,
        latent_dim2: int | None = None,
        *,
        hidden: Sequence[int] = (400,),
        hidden2: Sequence[int] | None = None,
        activation: str = "relu",
        prior: str | Prior = "normal",
        prior_options: Mapping[str, Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(f"the latent size must be a positive integer, got {latent_dim!r}")
        d2 = latent_dim2 if latent_dim2 else max(1, latent_dim // 2)
        check_size("--latent-dim2", d2)
        if not isinstance(d2, int) or d2 < 1:
            raise ConfigError(
                f"--latent-dim2 must be 0 (half of --latent-dim) or positive, got {latent_dim2!r}"
            )
        top_prior = PRIORS.resolve(prior, latent_dim=d2, **(prior_options or {}))
        super().__init__(
            x_shape,
            latent_dim,
            hidden=hidden,
            activation=activation,
            prior=top_prior,
            prior_dim=d2,
            name=name if name is not None else unique_name("hvae"),
            **kwargs,
        )
        self.latent_dim2 = d2
        widths = tuple(hidden2) if hidden2 is not None else (max(int(hidden[-1]) // 2, 8),) * 2
        check_size("hidden2", max(widths, default=1))
        if not widths or any(int(w) < 1 for w in widths):
            raise ConfigError(f"hidden2 needs positive layer sizes, got {widths!r}")
        self.hidden2 = widths
        self.up = mlp([latent_dim, *widths], activation, final_activation=True)  # z1 -> features
        self.q2 = DiagonalNormal(widths[-1], d2)  # q(z2 | z1)
        self.down = mlp(
            [d2, *reversed(widths)], activation, final_activation=True
        )  # z2 -> features
        self.p1 = DiagonalNormal(widths[0], latent_dim)  # p(z1 | z2)

    options = KL_WEIGHTING

    @classmethod
    def check_options(cls, options: dict[str, Any], config: RunConfig) -> None:
        check_size("--latent-dim2", options.get("latent_dim2") or 0)
        check_size("hidden2", max(options.get("hidden2") or (0,)))

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> HierarchicalVAE:
        return cls(x_shape, config.latent_dim, **part_options(config), **config.model_options)

    # -- the Pyro model/guide pair -------------------------------------------------------------
    def conditional_prior(self, z2: torch.Tensor) -> TorchDistribution:
        """p(z1 | z2) for latents of any batch shape."""
        loc, scale = self.p1.loc_scale(self.down(z2))
        standard = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc), validate_args=False)
        return dist.TransformedDistribution(
            standard.to_event(1), [AffineTransform(loc, scale, event_dim=1)], validate_args=False
        )

    def encode_top(self, z1: torch.Tensor) -> TorchDistribution:
        """q(z2 | z1)."""
        return self.q2(self.up(z1))

    def model(self, x: torch.Tensor | None = None, *, size: int | None = None) -> None:
        """p(z2) p(z1|z2) p(x|z1): scores ``x`` when given, else draws ``size`` data (see
        :meth:`VAE.model <pyro_vae.models.VAE.model>`)."""
        n = _plate_size(x, size)
        pyro.module(self.name, self)
        with pyro.plate("data", n):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.conditional_prior(z2))
            pyro.sample("x", self.decode(z1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module(self.name, self)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", self.q(self.encoder(x)))
            pyro.sample("z2", self.encode_top(z1))

    def vamp_component(self, u: torch.Tensor) -> TorchDistribution:
        """The VampPrior's components for pseudo-inputs ``u``: q(z2 | z1 = point summary of q(z1|u)).

        The exact q(z2|u) integrates over z1 and has no density in closed form.
        """
        return self.encode_top(self.q.mean(self.encoder(u)))

    def latent_prior(self) -> None:
        """None: z1's prior, the marginal of p(z2) p(z1|z2), has no density in closed form."""
        return None

    def latent_prior_sample(self, n: int) -> torch.Tensor:
        """``n`` draws of z1 from p(z2) p(z1|z2)."""
        return self.conditional_prior(self.prior().sample((n,))).sample()

    # -- conveniences --------------------------------------------------------------------------
    def sample(self, n: int) -> torch.Tensor:
        """Expected data for ``n`` draws of ``z2 ~ p(z2)``, ``z1 ~ p(z1|z2)``."""
        z2 = self.prior().sample((n,))
        return self.decode_mean(self.conditional_prior(z2).sample())


MODELS.register("hvae")(HierarchicalVAE)
