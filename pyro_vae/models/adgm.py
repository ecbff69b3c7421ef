"""The auxiliary deep generative models ADGM and SDGM of Maaløe, Sønderby, Sønderby and Winther (2016)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..errors import ConfigError
from ..guides import GUIDES
from ..nn import NETWORKS, observation, observation_mean
from ..nn import activation as activation_layer
from .base import MODELS, takes_options_of
from .cvae import join
from .m2 import M2
from .vae import _plate_size


class GaussianNet(nn.Module):
    """A diagonal Gaussian whose mean and scale are an MLP of its (broadcast, concatenated) inputs:
    the conditionals p(a|...) and q(a|x) of the auxiliary models."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), activation_layer(activation))
        self.head = GUIDES.build("diagonal", feature_dim=hidden, latent_dim=out_dim)

    def forward(self, *inputs: torch.Tensor) -> TorchDistribution:
        return self.head(self.body(join(*inputs)))

    def mean(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head.mean(self.body(join(*inputs)))


class AuxClassifier(nn.Module):
    """q(y|a, x): the encoder architecture on x, joined with a, then a hidden layer to K logits."""

    def __init__(
        self,
        x_shape: Sequence[int],
        aux_dim: int,
        num_classes: int,
        network: str,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        self.body = NETWORKS.build(network).encoder(x_shape, hidden, activation)
        width = hidden[-1]
        self.head = nn.Sequential(
            nn.Linear(self.body.feature_dim + aux_dim, width),
            activation_layer(activation),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return self.head(join(self.body(x), a))


class ADGM(M2):
    r"""The auxiliary deep generative model (ADGM) of Maaløe et al. (2016): M2 with an auxiliary
    latent ``a`` that makes the variational distribution of the label and of z richer.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                                        # prior, default N(0, I)
        y_n ~ Cat(1/K, ..., 1/K)                          # observed for labelled data
        x_n ~ p(x | decoder([z_n, onehot(y_n)]))           # likelihood, default Bernoulli
        a_n ~ N(a | p_a([h(x_n), z_n, onehot(y_n)]))       # p(a | x, y, z), diagonal Gaussian

    Adding ``a`` after x leaves the marginal p(x, y, z) of M2 unchanged. Inference (``guide``)::

        a_n ~ N(a | q_a(aux_encoder(x_n)))                      # q(a | x)
        y_n ~ Cat(softmax(classifier(x_n, a_n)))                # q(y | a, x), unlabelled data only
        z_n ~ q(z | join([encoder(x_n), a_n, onehot(y_n)]))     # any registered guide

    so q(y|x) = E_{q(a|x)} q(y|a, x) and q(z|x, y) are continuous mixtures, not a single softmax or
    Gaussian. The bounds are M2's (eq. 6, 7 of Kingma et al. 2014 with ``a`` as a further latent;
    Maaløe et al. eq. 6 and 7): y is summed out exactly by parallel enumeration under
    ``TraceEnum_ELBO``, ``a`` and ``z`` are reparametrised draws, and the labelled data add
    alpha E_{q(a|x)}[-log q(y|a, x)] (their eq. 9) through ``model_classify``. Predictions take
    ``a`` at the mean of q(a|x) (deterministic; one point of the mixture).

    ``aux_dim`` is a's size (default: ``latent_dim``; the paper uses 100 for both). ``h``,
    ``aux_encoder`` and the classifier's body have the encoder's architecture (``network``,
    ``hidden``, ``activation``) with their own weights; the Gaussian heads have one hidden layer of
    ``hidden[-1]`` units. The training plan's options (``labels``, ``val_labels``, ``patience``,
    ``val_size``, ``aux_weight``, ``labelled_every``) are :class:`M2`'s.
    """

    #: a's place: False puts it after x (ADGM), True makes it a parent of x (SDGM)
    skip: bool = False

    @takes_options_of(M2.__init__)
    def __init__(
        self,
        x_shape: Sequence[int],
        num_classes: int,
        latent_dim: int = 20,
        aux_dim: int | None = None,
        *,
        network: str = "mlp",
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        **parts: Any,
    ) -> None:
        aux_dim = latent_dim if aux_dim is None else aux_dim
        if not isinstance(aux_dim, int) or aux_dim < 1:
            raise ConfigError(f"--aux-dim must be a positive integer, got {aux_dim!r}")
        super().__init__(
            x_shape,
            num_classes,
            latent_dim=latent_dim,
            network=network,
            hidden=hidden,
            activation=activation,
            **parts,
        )
        self.aux_dim = aux_dim
        nets = NETWORKS.build(network, **(parts.get("network_options") or {}))
        width, k, f = hidden[-1], self.num_classes, self.encoder.feature_dim
        # q(z | x, a, y) reads a too; M2's join is rebuilt with room for it
        self.join = nn.Sequential(nn.Linear(f + aux_dim + k, f), activation_layer(activation))
        self.classifier = AuxClassifier(self.x_shape, aux_dim, k, network, hidden, activation)
        self.aux_encoder = nets.encoder(self.x_shape, hidden, activation)
        self.q_a = GaussianNet(self.aux_encoder.feature_dim, width, aux_dim, activation)
        if self.skip:  # p(a | z, y), and a feeds the decoder
            self.p_a = GaussianNet(latent_dim + k, width, aux_dim, activation)
            self.decoder = nets.decoder(
                latent_dim + k + aux_dim,
                self.x_shape,
                hidden,
                activation,
                self.likelihood.out_shape,
            )
        else:  # p(a | x, y, z)
            self.aux_x = nets.encoder(self.x_shape, hidden, activation)
            self.p_a = GaussianNet(
                self.aux_x.feature_dim + latent_dim + k, width, aux_dim, activation
            )

    def _model_parts(self) -> tuple[str, ...]:
        return ("decoder", "prior", "likelihood", "p_a", *(() if self.skip else ("aux_x",)))

    # -- Pyro -------------------------------------------------------------------------------------
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        size: int | None = None,
    ) -> None:
        """p(z) p(y) p(x|z, y) p(a|x, y, z) (ADGM) or p(z) p(y) p(a|z, y) p(x|a, z, y) (SDGM):
        scores ``x`` (and ``y``) when given, else draws data as
        :meth:`CVAE.model <pyro_vae.models.CVAE.model>` does."""
        n = _plate_size(x, size, y, labelled=True)
        self._register(*self._model_parts())
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior())
            y = pyro.sample("y", self.label_prior(), obs=y)
            zy = join(z, self.one_hot(y))
            if self.skip:
                a = pyro.sample("a", self.p_a(zy))
                pyro.sample("x", observation(self.decoder, self.likelihood, join(zy, a)), obs=x)
            else:
                x = pyro.sample("x", observation(self.decoder, self.likelihood, zy), obs=x)
                pyro.sample("a", self.p_a(self.aux_x(x), zy))

    def _guide_parts(self, labelled: bool) -> tuple[str, ...]:
        parts = ("encoder", "join", "q", "aux_encoder", "q_a")
        return parts if labelled else (*parts, "classifier")

    def aux_guide(self, x: torch.Tensor) -> TorchDistribution:
        """q(a|x)."""
        return self.q_a(self.aux_encoder(x))

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._register(*self._guide_parts(y is not None))
        with pyro.plate("data", x.shape[0]):
            a = pyro.sample("a", self.aux_guide(x))
            if y is None:
                # summed out exactly under TraceEnum_ELBO, as in M2
                q_y = dist.Categorical(logits=self.classifier(x, a), validate_args=False)
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            pyro.sample("z", self.q(self.features(x, y, a)))

    def model_classify(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """alpha E_{q(a|x)}[-log q(y|a, x)] on labelled data (one reparametrised draw of a), written
        as an observed site; scale it by alpha with ``poutine.scale``."""
        self._register("classifier", "aux_encoder", "q_a")
        with pyro.plate("data", x.shape[0]):
            a = self.aux_guide(x).rsample()
            pyro.sample("y_aux", dist.Categorical(logits=self.classifier(x, a)), obs=y)

    def label_guide(self, x: torch.Tensor) -> TorchDistribution:
        """q(y|a, x) at the mean of q(a|x)."""
        return dist.Categorical(logits=self.classifier(x, self.aux_mean(x)), validate_args=False)

    # -- classification and plots ---------------------------------------------------------------
    def aux_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_a.mean(self.aux_encoder(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|a, x) at a = the mean of q(a|x)."""
        return self.classifier(x, self.aux_mean(x)).argmax(-1)

    def features(
        self, x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None
    ) -> torch.Tensor:
        """q(z|x, a, y)'s input (``a`` defaults to the mean of q(a|x))."""
        a = self.aux_mean(x) if a is None else a
        return self.join(join(self.encoder(x), a, self.one_hot(y)))

    def _decoder_input(self, v: torch.Tensor) -> torch.Tensor:
        # SDGM's decoder also reads a: taken at the mean of p(a|z, y)
        return join(v, self.p_a.mean(v)) if self.skip else v

    def decode(self, v: torch.Tensor) -> TorchDistribution:
        """p(x | z, y) for ``v = [z, onehot(y)]`` (SDGM: at a = the mean of p(a|z, y))."""
        return observation(self.decoder, self.likelihood, self._decoder_input(v))

    def decode_mean(self, v: torch.Tensor) -> torch.Tensor:
        return observation_mean(self.decoder, self.likelihood, self._decoder_input(v))


class SDGM(ADGM):
    r"""The skip deep generative model (SDGM) of Maaløe et al. (2016): the ADGM with the auxiliary
    latent as a parent of x, a second stochastic layer of the generative model.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                                           # prior, default N(0, I)
        y_n ~ Cat(1/K, ..., 1/K)                             # observed for labelled data
        a_n ~ N(a | p_a([z_n, onehot(y_n)]))                  # p(a | z, y)
        x_n ~ p(x | decoder([z_n, onehot(y_n), a_n]))         # skip connections from z and y

    Inference (``guide``): the ADGM's, q(a|x) q(y|a, x) q(z|x, a, y), with y summed out for
    unlabelled data. Plots decode at a = the mean of p(a|z, y).
    """

    skip = True


MODELS.register("adgm")(ADGM)
MODELS.register("sdgm")(SDGM)
