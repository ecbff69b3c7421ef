"""The model contract and the registry of generative models.

A model is a :class:`Model`: an ``nn.Module`` whose ``model`` and ``guide`` methods are a Pyro
model/guide pair with a plate named ``data``, and which says what it trains with. The trainer
(:func:`pyro_vae.train`) only orchestrates (resume, device, seed, checkpoints, progress); the epoch of
steps comes from the model's :meth:`Model.training_plan`, so a model-specific schedule (M2's labelled
and unlabelled batches, M1+M2's two stages) lives in that model, not in the trainer.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pyro.infer import ELBO, Trace_ELBO
from torch import Tensor, nn

from ..config import KL_OPTIONS, changed_fields
from ..errors import ConfigError, DataError
from ..registry import Registry

if TYPE_CHECKING:
    from pyro.optim import PyroOptim

    from ..config import ModelConfig, RunConfig
    from ..data import Dataset
    from ..plan import TrainingPlan

#: configuration fields that only some models read; a model lists those it reads in ``Model.options``
#: and every other model refuses them when they differ from their defaults
MODEL_SPECIFIC: frozenset[str] = frozenset(
    {
        "model.latent_dim2",
        "model.aux_dim",
        "train.labels",
        "train.val_labels",
        "train.patience",
        "train.val_size",
        "train.aux_weight",
        "train.labelled_every",
        "train.m1_epochs",
        "train.objective_options",
        *(f"train.{k}" for k in KL_OPTIONS),
    }
)
#: the configured objective's options and KL weighting (on any objective): read by every model
#: whose steps use the configured objective
KL_WEIGHTING: frozenset[str] = frozenset(
    {"train.objective_options", *(f"train.{k}" for k in KL_OPTIONS)}
)

_counters: dict[str, itertools.count] = {}


def unique_name(prefix: str) -> str:
    """``prefix``, then ``prefix_1``, ``prefix_2``, ...: one name per model object in this process.

    Pyro's parameter store is global and keyed by name: two models registered under one name would
    share (and overwrite) each other's parameters. Each model object therefore gets its own name,
    and checkpoints store optimiser state relative to it (:func:`pyro_vae.train.train`).
    """
    n = next(_counters.setdefault(prefix, itertools.count()))
    return prefix if n == 0 else f"{prefix}_{n}"


class Model(nn.Module):
    """Base class of pyro-vae's generative models.

    Subclasses implement the Pyro pair ``model(x=None, ..., *, size=None)`` / ``guide(x, ...)`` with a
    plate named ``data``, and :meth:`from_config`; they declare

    - ``objectives``: the registered objectives they train with (``None``: every one);
    - ``options``: the fields of :data:`MODEL_SPECIFIC` they read (all others are refused);
    - ``partial_steps``: whether some training steps leave parameters unused (M2's classifier
      step), which data-parallel training must then look for after every forward pass.

    The defaults here are those of an unsupervised model trained by the configured objective: the
    :class:`~pyro_vae.plan.UnsupervisedPlan`, the Monte Carlo ELBO for evaluation, no extra metrics
    or figures.
    """

    objectives: ClassVar[frozenset[str] | None] = None
    options: ClassVar[frozenset[str]] = KL_WEIGHTING
    partial_steps: ClassVar[bool] = False
    x_shape: tuple[int, ...]
    latent_dim: int
    name: str
    #: the configuration :func:`build_model` built this model from (None: built by hand)
    built_from: ModelConfig | None = None

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> Model:
        raise NotImplementedError

    def check_data(self, x: Tensor) -> None:
        """Fail early, with a message, on data this model cannot score."""
        if tuple(x.shape[1:]) != tuple(self.x_shape):
            raise DataError(
                f"the model expects data of shape (N, {', '.join(map(str, self.x_shape))}) "
                f"but got {tuple(x.shape)}"
            )

    def training_plan(
        self, data: Dataset, config: RunConfig, optim: PyroOptim, objective: ELBO
    ) -> TrainingPlan:
        """The epoch of steps :func:`~pyro_vae.train.train` runs; by default every training image
        once per epoch under the configured objective."""
        from ..plan import UnsupervisedPlan

        return UnsupervisedPlan(self, data, config, optim, objective)

    def evaluation_objective(self, num_particles: int = 1) -> ELBO:
        """The bound ``evaluate.elbo`` scores data with: the Monte Carlo ELBO."""
        return Trace_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )

    def evaluate_extra(self, x: Tensor, labels: Tensor | None) -> dict[str, float]:
        """Metrics beyond the bounds (e.g. M2's test accuracy)."""
        return {}

    def run_summary(
        self, config: RunConfig, plan_state: Mapping[str, Any], dataset: Dataset
    ) -> dict[str, Any]:
        """What a trained run's plan did that its scores depend on, for ``evaluate`` (e.g. M2's
        labels used and how its epoch was selected); ``plan_state`` is the checkpoint's."""
        return {}

    def extra_figures(self, dataset: Dataset, out_dir: Path) -> list[Path]:
        """Figures beyond the common ones (e.g. the CVAE's class-conditional samples)."""
        return []


#: name -> a :class:`Model` subclass, built with ``cls.from_config(config, x_shape, num_classes)``
MODELS: Registry[type[Model]] = Registry("model")


def _flag(target: str) -> str:
    return "--" + target.split(".", 1)[1].replace("_", "-")


def check_model_options(config: RunConfig, cls: type | None = None) -> None:
    """Refuse options the model does not read and objectives it does not train with.

    ``cls`` is the model's class (by default the registered ``config.model.model``); a model that is
    not a :class:`Model` is trained by the default plan and takes every objective and KL weighting.
    """
    name = config.model.model
    if cls is None and name.startswith("custom:"):
        raise ConfigError(
            f"this configuration is of a run that trained a model passed as an object "
            f"({name[7:]}); continue it from Python: pyro_vae.train(config, run_dir, resume=True, "
            "model=...)"
        )
    if cls is None:
        cls = MODELS.get(name)
    declared = cls.options if issubclass(cls, Model) else KL_WEIGHTING
    objectives = cls.objectives if issubclass(cls, Model) else None
    what = f"--model {name}" if name in MODELS else f"the model {cls.__name__}"
    for target in sorted((changed_fields(config) & MODEL_SPECIFIC) - declared):
        takers = [n for n in MODELS if target in MODELS.get(n).options]
        raise ConfigError(
            f"{_flag(target)} is not used by {what}; it is an option of "
            f"{', '.join(takers) or 'no registered model'}"
        )
    objective = config.train.objective
    if objectives is not None and objective not in objectives:
        takers = [
            n
            for n in MODELS
            if MODELS.get(n).objectives is None or objective in MODELS.get(n).objectives
        ]
        raise ConfigError(
            f"{what} trains with --objective {', '.join(sorted(objectives))}, not {objective}; "
            f"--objective {objective} works with --model {', '.join(takers)}"
        )


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


def build_model(config: ModelConfig, x_shape: Sequence[int], num_classes: int | None) -> Model:
    """The registered model ``config.model`` built for data of shape ``x_shape``."""
    from ..config import RunConfig

    cls = MODELS.get(config.model)
    check_model_options(RunConfig(model=config), cls)  # model options it would ignore are refused
    model = cls.from_config(config, tuple(x_shape), num_classes)
    model.built_from = config
    return model


def check_parts(
    guide: Any, prior: Any, feature_dim: int, latent_dim: int, prior_dim: int | None = None
) -> None:
    """A guide or prior passed as an object must fit the model's encoder and latent sizes
    (``prior_dim``: the prior's, where it is over another latent than the guide's)."""
    if (guide.feature_dim, guide.latent_dim) != (feature_dim, latent_dim):
        raise ConfigError(
            f"the guide {type(guide).__name__} was built for feature_dim={guide.feature_dim}, "
            f"latent_dim={guide.latent_dim}, but this model's encoder gives {feature_dim} features "
            f"and its latent size is {latent_dim}; build the guide with those sizes"
        )
    prior_dim = latent_dim if prior_dim is None else prior_dim
    if prior.latent_dim != prior_dim:
        raise ConfigError(
            f"the prior {type(prior).__name__} has latent_dim={prior.latent_dim}, but this model's "
            f"prior is over {prior_dim} dimensions; build the prior with latent_dim={prior_dim}"
        )
