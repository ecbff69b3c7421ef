"""M1+M2 (Kingma, Mohamed, Rezende and Welling 2014, section 3.2): M2 on the latent space of a VAE."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyro
import torch
from pyro.distributions import TorchDistribution

from ..config import changed_fields
from ..errors import ConfigError
from ..plan import Feed, make_svi
from .base import KL_WEIGHTING, MODELS, check_size, takes_options_of, unique_name
from .cvae import join
from .m2 import M2, SemiSupervisedPlan
from .vae import VAE, _plate_size

if TYPE_CHECKING:
    from pyro.infer import ELBO
    from pyro.optim import PyroOptim

    from ..config import RunConfig
    from ..data import Dataset


class StackedM2(M2):
    r"""M1+M2: the semi-supervised M2 modelling the latent features z1 of a VAE (M1) of the data.

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n  ~ p(z)                                   # M2's prior, default N(0, I)
        y_n  ~ Cat(1/K, ..., 1/K)                     # observed for labelled data
        z1_n ~ N(mu(z_n, y_n), diag sigma^2)          # M2's decoder; sigma learned
        x_n  ~ p(x | decoder1(z1_n))                  # M1's decoder and likelihood

    Inference (``guide``)::

        z1_n ~ N(mu1(x_n), diag sigma1(x_n)^2)        # M1's encoder
        y_n  ~ Cat(softmax(classifier(mu1(x_n))))     # q(y|x), summed out when not observed
        z_n  ~ q(z | join([encoder(z1_n), onehot(y_n)]))

    The ELBO of this pair bounds log p(x) (or log p(x, y)); its M2 terms are M2's bounds (eq. 6, 7
    and the auxiliary term of eq. 9) with z1 in place of x. The classifier reads M1's posterior
    mean rather than a draw of z1, so that it sees the same input in training and in
    :meth:`predict` (any function of x is a valid q(y|x); a draw only adds noise to its input). Trained as in the paper, greedily: the
    first ``m1_epochs`` epochs of the training plan fit M1 alone as a VAE with a standard-normal
    prior on z1; after that M1 is frozen and M2 learns on z1 drawn afresh from q(z1|x) at every
    step. Why stack: M1's latent space separates the classes far better than pixels do, and the
    paper reports 96.7% with 100 MNIST labels against 88.0% for M2 alone.

    ``latent_dim`` is z1's size, ``latent_dim2`` z's (0: the same). The networks (``network``,
    ``hidden``, ``activation``) and ``likelihood`` are M1's; M2's networks are MLPs of the same
    ``hidden`` sizes on z1. ``guide`` and ``prior`` are M2's q(z|z1, y) and p(z); M1 keeps the diagonal
    Gaussian guide and the standard-normal prior of the paper. The training plan's options
    (``labels``, ``val_labels``, ``patience``, ``val_size``, ``aux_weight``, ``labelled_every``)
    are :class:`M2`'s.
    """

    #: KL weighting of M1's stage, whose objective is the configured one
    options = KL_WEIGHTING

    @classmethod
    def check_options(cls, options: dict[str, Any], config: RunConfig) -> None:
        check_size("--latent-dim2", options.get("latent_dim2", 0))
        m1_epochs, epochs = options.get("m1_epochs"), config.train.epochs
        if m1_epochs is not None and not 0 <= m1_epochs < epochs:
            raise ConfigError(
                f"--m1-epochs must lie in 0..{epochs - 1} (M2 needs at least one of the "
                f"--epochs {epochs}), got {m1_epochs!r}"
            )

    @takes_options_of(M2.__init__)
    def __init__(
        self,
        x_shape: Sequence[int],
        num_classes: int,
        latent_dim: int = 50,
        latent_dim2: int = 0,
        *,
        m1_epochs: int | None = None,
        network: str = "mlp",
        network_options: Mapping[str, Any] | None = None,
        hidden: Sequence[int] = (500,),
        activation: str = "relu",
        likelihood: str = "bernoulli",
        likelihood_options: Mapping[str, Any] | None = None,
        name: str | None = None,
        **m2_parts: Any,
    ) -> None:
        if not isinstance(latent_dim2, int) or latent_dim2 < 0:
            raise ConfigError(f"--latent-dim2 must be 0 or a positive integer, got {latent_dim2!r}")
        check_size("--latent-dim2", latent_dim2)
        super().__init__(
            (latent_dim,),
            num_classes,
            latent_dim=latent_dim2 or latent_dim,
            network="mlp",
            hidden=hidden,
            activation=activation,
            likelihood="gaussian",
            likelihood_options={"learn_scale": True},
            name=name if name is not None else unique_name("m1m2"),
            **m2_parts,
        )
        if m1_epochs is not None and (isinstance(m1_epochs, bool) or m1_epochs < 0):
            raise ConfigError(f"--m1-epochs must be 0 or positive, got {m1_epochs!r}")
        self.m1_epochs = m1_epochs
        self.m1 = VAE(
            x_shape,
            latent_dim,
            network=network,
            network_options=network_options,
            hidden=hidden,
            activation=activation,
            likelihood=likelihood,
            likelihood_options=likelihood_options,
        )
        self.x_shape = self.m1.x_shape  # the data's shape; M2's parts model z1
        self.m1_frozen = False

    def freeze_m1(self, frozen: bool = True) -> None:
        """Stop (or resume) training M1: its parameters leave the steps and get no gradients."""
        self.m1_frozen = frozen
        self.m1.requires_grad_(not frozen)

    def _m1_parts(self) -> tuple[str, ...]:
        return () if self.m1_frozen else ("m1",)

    # -- Pyro -------------------------------------------------------------------------------------
    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        size: int | None = None,
    ) -> None:
        """p(z) p(y) p(z1|z, y) p(x|z1): scores ``x`` (and ``y``) when given, else draws data, z1 and
        then x (``size`` data with labels from p(y), or one per label of ``y``; see
        :meth:`CVAE.model <pyro_vae.models.CVAE.model>`)."""
        n = _plate_size(x, size, y, labelled=True)
        self._register("decoder", "prior", "likelihood", *self._m1_parts())
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior())
            y = pyro.sample("y", self.label_prior(), obs=y)
            z1 = pyro.sample("z1", self.likelihood(self.decoder(join(z, self.one_hot(y)))))
            pyro.sample("x", self.m1.decode(z1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._register(*self._guide_parts(y is not None), *self._m1_parts())
        h1 = self.m1.encoder(x)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", self.m1.q(h1))
            if y is None:
                q_y = self._classify(self.m1.q.mean(h1))
                y = pyro.sample("y", q_y, infer={"enumerate": "parallel"})
            pyro.sample("z", self.q(super().features(z1, y)))

    def m1_model(self, x: torch.Tensor | None = None, *, size: int | None = None) -> None:
        """M1 alone, p(z1) p(x|z1) with p(z1) = N(0, I): the first stage of training. With ``x=None``
        it draws ``size`` data from M1, as :meth:`VAE.model <pyro_vae.models.VAE.model>` does."""
        n = _plate_size(x, size)
        self._register("m1")
        with pyro.plate("data", n):
            z1 = pyro.sample("z1", self.m1.prior())
            pyro.sample("x", self.m1.decode(z1), obs=x)

    def m1_guide(self, x: torch.Tensor) -> None:
        self._register("m1")
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z1", self.m1.encode(x))

    def _classify(self, z1: torch.Tensor) -> TorchDistribution:
        return super().label_guide(z1)

    def label_guide(self, x: torch.Tensor) -> TorchDistribution:
        """q(y|x): the classifier at the mean of q(z1|x)."""
        return self._classify(self.m1_features(x))

    # -- classification and plots -------------------------------------------------------------
    def m1_features(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of q(z1|x): M1's point summary of ``x``."""
        return self.m1.latent_mean(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y q(y|x), the classifier at the mean of q(z1|x)."""
        return self.classifier(self.m1_features(x)).argmax(-1)

    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """q(z|z1, y)'s input for data ``x``, at the mean of q(z1|x)."""
        return super().features(self.m1_features(x), y)

    def decode(self, v: torch.Tensor) -> TorchDistribution:
        """p(x | z1) at z1 = the mean of p(z1 | z, y), for ``v = [z, onehot(y)]``."""
        return self.m1.decode(self.likelihood.mean(self.decoder(v)))

    def decode_mean(self, v: torch.Tensor) -> torch.Tensor:
        return self.m1.decode_mean(self.likelihood.mean(self.decoder(v)))

    def check_data(self, x: torch.Tensor) -> None:
        self.m1.check_data(x)

    # -- training ---------------------------------------------------------------------------------
    def make_plan(
        self,
        data: Dataset,
        labels: torch.Tensor,
        config: RunConfig,
        optim: PyroOptim,
        objective: ELBO,
    ) -> StackedPlan:
        return StackedPlan(self, data, labels, config, optim, objective)


def default_m1_epochs(epochs: int) -> int:
    """Epochs that train M1 when ``--m1-epochs`` is not given: half of them."""
    return epochs // 2


class StackedPlan(SemiSupervisedPlan):
    """M1+M2's epochs: the first ``m1_epochs`` fit M1 on every training image but the validation set
    (the trainer's objective, so ``--kl-anneal`` applies), the rest are M2's semi-supervised epochs
    (:class:`~pyro_vae.models.m2.SemiSupervisedPlan`) with M1 frozen. Validation picks among M2's
    epochs only."""

    def __init__(
        self,
        model: StackedM2,
        data: Dataset,
        labels: torch.Tensor,
        config: RunConfig,
        optim: PyroOptim,
        objective: ELBO,
    ) -> None:
        super().__init__(model, data, labels, config, optim)
        t = config.train
        self.m1_epochs = default_m1_epochs(t.epochs) if model.m1_epochs is None else model.m1_epochs
        if not 0 <= self.m1_epochs < t.epochs:
            raise ConfigError(
                f"--m1-epochs {self.m1_epochs} leaves no epoch for M2 out of --epochs {t.epochs}; "
                "pass fewer M1 epochs or more epochs"
            )
        if self.m1_epochs == 0 and changed_fields(config) & KL_WEIGHTING:
            raise ConfigError(
                "--objective-opt, --beta, --kl-anneal and --free-bits act on M1's stage of --model "
                "m1m2, but --m1-epochs 0 leaves it out; drop them or train M1 for some epochs"
            )
        self.m1_images = torch.cat([self.labelled, self.unlabelled])
        self.objective = objective  # M1's stage: KL annealing moves with the epochs
        self.svi_m1 = make_svi(model.m1_model, model.m1_guide, optim, objective, config)

    def in_m1_stage(self) -> bool:
        return self.epochs_done < self.m1_epochs

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]:
        model: StackedM2 = self.model  # type: ignore[assignment]
        if not self.in_m1_stage():
            model.freeze_m1(True)
            yield from super().epoch(feed)
            return
        model.freeze_m1(False)
        batches = feed.shuffle(self.m1_images, self.batch_size)
        for idx, x in zip(batches, feed(batches)):
            yield self.svi_m1.step(x), idx.shape[0]

    def end_epoch(self, data: Dataset) -> dict[str, float]:
        if not self.in_m1_stage():
            return {"stage": 2.0, **super().end_epoch(data)}
        self.epochs_done += 1
        return {"stage": 1.0}

    def finish(self) -> None:
        super().finish()
        self.model.freeze_m1(False)  # type: ignore[operator]


MODELS.register("m1m2")(StackedM2)
