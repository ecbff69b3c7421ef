"""The conditional VAE: a label-conditioned generative model p(x | y, z), trained on labelled data."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import TorchDistribution
from pyro.infer import TraceEnum_ELBO
from torch import nn

from ..errors import ConfigError, DataError
from ..guides import GUIDES, AmortizedGuide
from ..likelihoods import LIKELIHOODS, Likelihood
from ..nn import NETWORKS, observation, observation_mean
from ..nn import activation as activation_layer
from ..plan import Feed, Plan, make_svi, num_batches, prepare, world_size
from ..priors import PRIORS, Prior
from .base import MODELS, Model, check_parts, part_options, unique_name
from .vae import _plate_size

if TYPE_CHECKING:
    from pyro.infer import ELBO
    from pyro.optim import PyroOptim

    from ..config import ModelConfig, RunConfig
    from ..data import Dataset


def join(*parts: torch.Tensor) -> torch.Tensor:
    """Concatenate along the last dimension after broadcasting the leading (batch) dimensions.

    Enumerated labels have shape ``(K, 1, K)`` and particles add a dimension in front of the data,
    so the pieces rarely share their batch shape; ``torch.cat`` does not broadcast.
    """
    batch = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*batch, p.shape[-1]) for p in parts], dim=-1)


def check_labels(
    labels: torch.Tensor | None, num_classes: int, what: str, *, unlabelled: bool = False
) -> torch.Tensor:
    """The training labels, checked: given, below ``num_classes``, and at least 0 (or -1, an
    unlabelled row, where ``unlabelled`` allows it)."""
    if labels is None:
        raise DataError(
            f"{what} needs labelled data, but this data set has no labels; "
            "use a data set with labels (digits, mnist, fashion-mnist, or a .npz with y_train)"
        )
    missing = int((labels < 0).sum())
    if missing and not unlabelled:
        raise DataError(
            f"{what} trains on labelled data only, but {missing} of the {labels.shape[0]} training "
            "rows are unlabelled (-1); drop them, or train a semi-supervised model (--model m2, "
            "m1m2, adgm or sdgm)"
        )
    if labels.min() < (-1 if unlabelled else 0) or labels.max() >= num_classes:
        raise DataError(
            f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    return labels


class CVAE(Model):
    r"""The conditional VAE (Sohn et al. 2015; Kingma et al. 2014's M2 without a classifier).

    Generative process (``model``), for each datum ``x_n`` in the plate ``data``::

        z_n ~ p(z)                               # prior, default N(0, I)
        y_n ~ Cat(1/K, ..., 1/K)                 # observed when the label is given
        x_n ~ p(x | decoder([z_n, onehot(y_n)]))  # likelihood, default Bernoulli

    Inference (``guide``)::

        y_n ~ Cat(1/K, ..., 1/K)                 # only when y is not given (enumerated)
        z_n ~ q(z | join([encoder(x_n), onehot(y_n)]))

    With labels, the ELBO bounds log p(x, y) = log p(x | y) - log K. Without, the guide's uniform
    q(y) makes ``TraceEnum_ELBO`` average the conditional bounds over the K labels, a bound on
    log p(x); this keeps ``evaluate.elbo`` a bound on log p(x) for every model.

    ``join`` is one dense layer on the encoder features concatenated with the one-hot label: it lets
    the label change the whole posterior (not just shift the guide's linear outputs), and any
    registered guide (e.g. a flow) then maps the joined features to q(z|x, y). The "latent" the
    generic plots see is ``[z, onehot(y)]``, so reconstructions, interpolations and latent maps work
    unchanged; ``decode`` takes that concatenation.
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        num_classes: int,
        latent_dim: int = 20,
        *,
        network: str = "mlp",
        network_options: Mapping[str, Any] | None = None,
        hidden: Sequence[int] = (400,),
        activation: str = "relu",
        guide: str | AmortizedGuide = "diagonal",
        guide_options: Mapping[str, Any] | None = None,
        prior: str | Prior = "normal",
        prior_options: Mapping[str, Any] | None = None,
        likelihood: str | Likelihood = "bernoulli",
        likelihood_options: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ConfigError(f"the latent size must be a positive integer, got {latent_dim!r}")
        if num_classes is None or num_classes < 2:
            raise DataError(
                f"a label-conditioned model needs a labelled data set with at least 2 classes, "
                f"got {num_classes!r} classes"
            )
        self.x_shape = tuple(int(s) for s in x_shape)
        self.latent_dim = latent_dim
        self.num_classes = int(num_classes)
        # one name per object in Pyro's global parameter store, so two models never share parameters
        self.name = name if name is not None else unique_name(type(self).__name__.lower())
        self.likelihood = LIKELIHOODS.resolve(
            likelihood, x_shape=self.x_shape, **(likelihood_options or {})
        )
        nets = NETWORKS.build(network, **(network_options or {}))
        self.encoder = nets.encoder(self.x_shape, hidden, activation)
        self.decoder = nets.decoder(
            latent_dim + self.num_classes,
            self.x_shape,
            hidden,
            activation,
            self.likelihood.out_shape,
        )
        feature_dim = self.encoder.feature_dim
        self.join = nn.Sequential(
            nn.Linear(feature_dim + self.num_classes, feature_dim), activation_layer(activation)
        )
        self.q = GUIDES.resolve(
            guide, feature_dim=feature_dim, latent_dim=latent_dim, **(guide_options or {})
        )
        self.prior = PRIORS.resolve(prior, latent_dim=latent_dim, **(prior_options or {}))
        check_parts(self.q, self.prior, feature_dim, latent_dim)
        # p(y): uniform; a buffer so that it follows the model's device and dtype
        self.register_buffer("y_logits", torch.zeros(self.num_classes))
        self.prior.attach(self)

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> CVAE:
        return cls(
            x_shape,
            num_classes,
            latent_dim=config.latent_dim,
            **part_options(config),
            **config.model_options,
        )

    # -- Pyro -------------------------------------------------------------------------------------
    def _register(self, *parts: str) -> None:
        """``pyro.module`` on only the parts a step uses, under the names ``pyro.module(self)`` gives.

        A parameter in the step's trace is stepped by Adam even when its gradient is zero (Pyro zeroes
        gradients rather than dropping them), so registering unused parts would move them by momentum.
        """
        pyro.module(self.name, nn.ModuleDict({p: getattr(self, p) for p in parts}))

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.num_classes).to(self.y_logits.dtype)

    def label_prior(self) -> TorchDistribution:
        return dist.Categorical(logits=self.y_logits, validate_args=False)

    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        size: int | None = None,
    ) -> None:
        """p(z) p(y) p(x|z, y): scores ``x`` (and ``y``) when given, else draws data.

        With ``x=None`` the site ``x`` is sampled: ``size`` data with labels drawn from p(y), or, with
        labels ``y``, one datum per label from p(x|y) (class-conditional generation), so
        ``Predictive(m.model, num_samples=S)(y=labels)["x"]`` has shape ``(S, len(labels), *x_shape)``.
        """
        n = _plate_size(x, size, y, labelled=True)
        self._register("decoder", "prior", "likelihood")
        with pyro.plate("data", n):
            z = pyro.sample("z", self.prior())
            y = pyro.sample("y", self.label_prior(), obs=y)
            pyro.sample(
                "x", observation(self.decoder, self.likelihood, join(z, self.one_hot(y))), obs=x
            )

    def label_guide(self, x: torch.Tensor) -> TorchDistribution:
        """q(y|x) for unlabelled data: uniform here, a classifier in M2."""
        return self.label_prior()

    def _guide_parts(self, labelled: bool) -> tuple[str, ...]:
        return ("encoder", "join", "q")

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        self._register(*self._guide_parts(y is not None))
        with pyro.plate("data", x.shape[0]):
            if y is None:
                # summed out exactly under TraceEnum_ELBO (Kingma et al. 2014, eq. 7)
                y = pyro.sample("y", self.label_guide(x), infer={"enumerate": "parallel"})
            pyro.sample("z", self.q(self.features(x, y)))

    def evaluation_objective(self, num_particles: int = 1) -> ELBO:
        """The bound ``evaluate.elbo`` scores unlabelled data with: unknown labels summed out exactly."""
        return TraceEnum_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )

    # -- conveniences for plots, the CLI and evaluation ---------------------------------------------
    def features(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The guide's input for data ``x`` with integer labels ``y`` (broadcast against each other)."""
        return self.join(join(self.encoder(x), self.one_hot(y)))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable label: here argmax_y of the one-point bound log p(x, z|y) - log q(z|x, y)
        at z = the guide's mean, i.e. the generative model used as a classifier."""
        labels = torch.arange(self.num_classes, device=x.device).unsqueeze(-1)  # (K, 1)
        h = self.features(x, labels)  # (K, N, F)
        z = self.q.mean(h)
        score = (
            observation(self.decoder, self.likelihood, join(z, self.one_hot(labels))).log_prob(x)
            + self.prior().log_prob(z)
            - self.q(h).log_prob(z)
        )
        return score.argmax(0)

    def representation(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, TorchDistribution, dict[str, torch.Tensor]]:
        """The z part of ``latent_mean``'s ``[z, onehot(y)]`` and q(z|x, y), with y the model's own
        prediction (returned as ``predicted_labels``): the labels a caller holds never enter q, so
        the representation of a test image does not depend on its label (a probe on it would read
        the answer)."""
        y = self.predict(x)
        mean = self.latent_mean(x, y)[..., : self.latent_dim]
        return mean, self.encode(x, y), {"predicted_labels": y}

    def _labels_or_predicted(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.predict(x) if y is None else y

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> TorchDistribution:
        """q(z|x, y) for a batch; ``y`` defaults to the predicted labels."""
        return self.q(self.features(x, self._labels_or_predicted(x, y)))

    def latent_mean(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``[mean of q(z|x, y), onehot(y)]``: the point in the decoder's input space for ``x``."""
        y = self._labels_or_predicted(x, y)
        return join(self.q.mean(self.features(x, y)), self.one_hot(y))

    def decoder_input(self, z: torch.Tensor, label: int | None = None) -> torch.Tensor:
        """``[z, onehot(label)]`` for latents ``z`` ``(N, D)``: every row of class ``label`` (an
        integer in 0..num_classes-1; None: class 0)."""
        k = self.num_classes
        if label is None:
            label = 0
        if isinstance(label, bool) or not isinstance(label, numbers.Integral) or not 0 <= label < k:
            raise ConfigError(
                f"label must be a class of this model, an integer in 0..{k - 1}, got {label!r}"
            )
        y = torch.full(z.shape[:-1], int(label), dtype=torch.long, device=z.device)
        return join(z, self.one_hot(y))

    def decode(self, v: torch.Tensor) -> TorchDistribution:
        """p(x | z, y) for ``v = [z, onehot(y)]`` (any soft label mixes the classes)."""
        return observation(self.decoder, self.likelihood, v)

    def decode_mean(self, v: torch.Tensor) -> torch.Tensor:
        return observation_mean(self.decoder, self.likelihood, v)

    def conditional_mean(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The expected datum for latents ``z`` and integer labels ``y`` (broadcast)."""
        return self.decode_mean(join(z, self.one_hot(y)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode_mean(self.latent_mean(x))

    def sample(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Expected data for ``n`` latents from the prior, with labels ``y`` (default drawn from p(y))."""
        z = self.prior().sample((n,))
        if y is None:
            y = self.label_prior().sample((n,))
        return self.conditional_mean(z, y)

    def check_data(self, x: torch.Tensor) -> None:
        super().check_data(x)
        if not torch.isfinite(x).all():
            raise DataError("the data contain NaN or infinite values; clean or impute them first")
        self.likelihood.check(x)

    @torch.no_grad()
    def conditional_elbo(
        self, x: torch.Tensor, y: torch.Tensor, num_particles: int = 1, batch_size: int = 1024
    ) -> float:
        """Mean bound on log p(x | y) per datum (nats): the labelled ELBO plus log K."""
        elbo = pyro.infer.Trace_ELBO(
            num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
        )
        total = sum(
            elbo.loss(self.model, self.guide, xb, yb)
            for xb, yb in zip(x.split(batch_size), y.split(batch_size))
        )
        return -float(total) / x.shape[0] + math.log(self.num_classes)

    def evaluate_extra(self, x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, float]:
        if labels is None:
            return {}
        was_training = self.training
        self.eval()
        try:
            return {"test_conditional_elbo": self.conditional_elbo(x, labels)}
        finally:
            self.train(was_training)

    # -- figures ----------------------------------------------------------------------------------
    @torch.no_grad()
    def extra_figures(self, dataset: Dataset, out_dir: Path) -> list[Path]:
        written = [conditional_samples(self, Path(out_dir) / "conditional_samples.png")]
        written.append(
            style_transfer(
                self, dataset.test, dataset.test_labels, Path(out_dir) / "style_transfer.png"
            )
        )
        return [p for p in written if p is not None]

    # -- training ---------------------------------------------------------------------------------
    def training_plan(
        self, data: Dataset, config: RunConfig, optim: PyroOptim, objective: ELBO
    ) -> LabelledPlan:
        """Every training image with its label, batch by batch, under the trainer's objective."""
        labels = check_labels(data.train_labels, self.num_classes, "--model cvae")
        return LabelledPlan(self, labels, config, optim, objective)


@torch.no_grad()
def conditional_samples(model: CVAE, path: Path, styles: int = 10, seed: int = 0) -> Path | None:
    """One row per class, one column per style z: the same z decoded with every label."""
    from ..images import _save_grid

    z = _prior_draws(model, styles, seed)
    labels = torch.arange(model.num_classes, device=z.device).unsqueeze(-1)  # (K, 1)
    images = model.conditional_mean(z, labels)  # (K, styles, *x_shape)
    return _save_grid(
        images.reshape(-1, *model.x_shape),
        nrow=styles,
        path=path,
        title="conditional samples: one row per class, one column per style z",
    )


def _prior_draws(model: CVAE, n: int, seed: int) -> torch.Tensor:
    """``n`` draws from p(z) under a fixed seed, so that a redrawn figure shows the same styles;
    the global RNG (devices included) is restored afterwards."""
    with torch.random.fork_rng(devices=[] if not torch.cuda.is_available() else None):
        torch.manual_seed(seed)
        return model.prior().sample((n,))


@torch.no_grad()
def style_transfer(
    model: CVAE, x: torch.Tensor, labels: torch.Tensor | None, path: Path, n: int = 8
) -> Path | None:
    """Each row: a test image, then its style z (inferred with its label) decoded with every label."""
    from ..images import _save_grid

    x = x[:n]
    y = labels[:n] if labels is not None else None
    z = model.latent_mean(x, y)[..., : model.latent_dim]  # (n, D)
    every = torch.arange(model.num_classes, device=x.device).unsqueeze(-1)  # (K, 1)
    out = model.conditional_mean(z, every).transpose(0, 1)  # (n, K, *x_shape)
    rows = torch.cat([x.unsqueeze(1).to(out.dtype), out], dim=1)
    return _save_grid(
        rows.reshape(-1, *model.x_shape),
        nrow=model.num_classes + 1,
        path=path,
        title="style transfer: test image (left), its z decoded with every label",
    )


class LabelledPlan(Plan):
    """The CVAE's epoch: shuffled batches of (x, y) over the whole labelled training set, one step of
    the configured objective on each (a :class:`~pyro_vae.plan.TrainingPlan`)."""

    def __init__(
        self,
        model: CVAE,
        labels: torch.Tensor,
        config: RunConfig,
        optim: PyroOptim,
        objective: ELBO,
    ) -> None:
        self.model = model
        self.labels = labels
        self.config = config
        self.batch_size = config.train.batch_size
        self.objective = objective
        self.svi = make_svi(model.model, model.guide, optim, objective, config)
        n = labels.shape[0]
        prepare(objective, n, world_size(config))
        self.steps_per_epoch = num_batches(n, self.batch_size, world_size(config))

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]:
        batches = feed.shuffle(self.labels.shape[0], self.batch_size)
        for idx, x in zip(batches, feed(batches)):
            yield self.step(x, self.labels[idx]), idx.shape[0]

    def end_epoch(self, data: Dataset) -> dict[str, float]:
        if data.test_labels is None:
            return {}
        return self.model.evaluate_extra(data.test, data.test_labels)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state (the best epoch's weights)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


MODELS.register("cvae")(CVAE)
