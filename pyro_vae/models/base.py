"""The model contract and the registry of generative models.

A model is a :class:`Model`: an ``nn.Module`` whose ``model`` and ``guide`` methods are a Pyro
model/guide pair with a plate named ``data``, and which says what it trains with. The trainer
(:func:`pyro_vae.train`) only orchestrates (resume, device, seed, checkpoints, progress); the epoch of
steps comes from the model's :meth:`Model.training_plan`, so a model-specific schedule (M2's labelled
and unlabelled batches, M1+M2's two stages) lives in that model, not in the trainer.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pyro import poutine
from pyro.infer import ELBO, Trace_ELBO
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn
from torch.distributions import Distribution

from ..config import ModelConfig, changed_fields
from ..describe import Described
from ..errors import ConfigError, DataError
from ..objectives.kl import KL_OPTIONS
from ..registry import Registry

if TYPE_CHECKING:
    from pyro.optim import PyroOptim

    from ..config import RunConfig
    from ..data import Dataset
    from ..plan import TrainingPlan

#: the KL weighting and objective options of the training configuration: read by a model whose
#: steps use the configured objective (``Model.options``), refused by every other model when they
#: differ from their defaults. A model's own options are the keyword arguments of its constructor
#: (``ModelConfig.model_options``), typed and checked from its signature by :data:`MODELS`.
MODEL_SPECIFIC: frozenset[str] = frozenset(
    {"train.objective_options", *(f"train.{k}" for k in KL_OPTIONS)}
)
KL_WEIGHTING = MODEL_SPECIFIC

_counters: dict[str, itertools.count] = {}


#: sizes past this are typos (2**40 for 240), not experiments: refused before they become an
#: allocation of terabytes
MAX_SIZE = 2**16


_Init = TypeVar("_Init", bound=Callable[..., None])


def check_size(flag: str, value: int) -> None:
    """Refuse a layer or latent size larger than :data:`MAX_SIZE`."""
    if value > MAX_SIZE:
        raise ConfigError(f"{flag} {value} is larger than pyro-vae allows ({MAX_SIZE})")


def unique_name(prefix: str) -> str:
    """``prefix``, then ``prefix_1``, ``prefix_2``, ...: one name per model object in this process.

    Pyro's parameter store is global and keyed by name: two models registered under one name would
    share (and overwrite) each other's parameters. Each model object therefore gets its own name,
    and checkpoints store optimiser state relative to it (:func:`pyro_vae.train.train`).
    """
    n = next(_counters.setdefault(prefix, itertools.count()))
    return prefix if n == 0 else f"{prefix}_{n}"


class Model(Described, nn.Module):
    """Base class of pyro-vae's generative models.

    A subclass defines (the README's ``TinyVAE`` is a complete one):

    - ``model(x=None, *, size=None)`` and ``guide(x)``: the Pyro pair, each calling
      ``pyro.module(self.name, self)`` and sampling inside ``pyro.plate("data", N)``;
    - ``__init__`` calling ``super().__init__(x_shape, latent_dim)`` (both optional: ``x_shape`` is
      the shape of one datum, checked against the data; ``name=`` fixes the name in Pyro's store,
      unique per object by default); its arguments are recorded, so a run describes the model
      (:func:`pyro_vae.describe`) and rebuilds it when the class is importable;
    - ``from_config(config, x_shape, num_classes)``, only to be built by name (``--model``, after
      ``@MODELS.register("name")``); its keyword arguments beyond the shared ones are its options;
    - a docstring writing out its generative process.

    It may override everything below.

    Subclasses implement the Pyro pair ``model(x=None, ..., *, size=None)`` / ``guide(x, ...)`` with a
    plate named ``data``, and :meth:`from_config`; they declare

    - ``objectives``: the registered objectives they train with (``None``: every one);
    - ``options``: the fields of :data:`MODEL_SPECIFIC` (the configured objective's options and
      KL weighting) they read; all others are refused. Their own options are the keyword arguments
      of their ``__init__`` (see :data:`MODELS`);
    - ``partial_steps``: whether some training steps leave parameters unused (M2's classifier
      step), which data-parallel training must then look for after every forward pass.

    The defaults here are those of an unsupervised model trained by the configured objective: the
    :class:`~pyro_vae.plan.UnsupervisedPlan`, the Monte Carlo ELBO for evaluation, no extra metrics
    or figures.

    Evaluation, representations and figures ask a model, never its type: :meth:`representation`
    (by default ``latent_mean``/``encode``), :meth:`latent_prior` and :meth:`latent_prior_sample`
    (by default ``prior()``), :meth:`decoder_input` (by default the latent itself; the label models
    add a class), :meth:`vamp_component` (by default through ``q`` and ``encoder``),
    :meth:`store_prefix`, :meth:`check_options`. A model-specific case overrides one of them in that
    model's own module. A Pyro pair that is not a ``Model`` is wrapped into one where it enters
    pyro-vae (:func:`as_model`).
    """

    objectives: ClassVar[frozenset[str] | None] = None
    options: ClassVar[frozenset[str]] = KL_WEIGHTING
    partial_steps: ClassVar[bool] = False
    #: the shape of one datum, checked against the data (None: not checked)
    x_shape: tuple[int, ...] | None = None
    latent_dim: int | None = None
    #: the number of classes of a model over labelled data (M2, the CVAE); None for the others
    num_classes: int | None = None
    #: the configuration :func:`build_model` built this model from (None: built by hand)
    built_from: ModelConfig | None = None

    def __init__(
        self,
        x_shape: Sequence[int] | None = None,
        latent_dim: int | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__()
        if x_shape is not None:
            self.x_shape = tuple(int(s) for s in x_shape)
        if latent_dim is not None:
            self.latent_dim = latent_dim
        if name is not None:
            self.name = name

    @property
    def name(self) -> str:
        """The model's name in Pyro's parameter store (``pyro.module(self.name, self)``): unique
        per object (``tinyvae``, ``tinyvae_1``, ...) unless set."""
        if "_store_name" not in self.__dict__:
            self.__dict__["_store_name"] = unique_name(type(self).__name__.lower())
        return self.__dict__["_store_name"]

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_store_name"] = value

    @classmethod
    def from_config(
        cls, config: ModelConfig, x_shape: Sequence[int], num_classes: int | None
    ) -> Model:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        # Pyro's parameter store marks each parameter it has seen with a weak reference to its
        # unconstrained value (``param.unconstrained``), which pickle cannot write; it is a cache
        # the store sets again whenever it hands the parameter out, so it is dropped here
        for p in self.parameters():
            p.__dict__.pop("unconstrained", None)
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # a copy (unpickled, deep-copied, torch.load-ed) is another model object: under the
        # original's name it would read the original's parameters from Pyro's global store
        if "_store_name" in self.__dict__:  # else the name is drawn afresh when first read
            self.name = unique_name(f"{self.name}.copy")

    def onnx_graphs(self) -> dict[str, tuple[Callable[[Tensor], Any], tuple[int, ...]]]:
        """What ``pyro-vae export --onnx`` writes as graphs: ``"encoder"`` (a batch of data to
        q(z|x)) and ``"decoder"`` (a batch of latents to p(x|z)), each a function of one tensor
        returning a distribution, with the event shape of its input. A model whose encoder or
        decoder takes more than one input (labels) has none."""
        raise ConfigError(
            f"{type(self).__name__} has no ONNX graphs: its encoder or decoder takes more than one "
            "input; export it without --onnx"
        )

    @classmethod
    def check_options(cls, options: dict[str, Any], config: RunConfig) -> None:
        """Refuse model ``options`` (typed) that cannot work with the rest of ``config`` (e.g. an
        M1 stage as long as the whole run), before anything is built; by default all can."""

    def check_data(self, x: Tensor) -> None:
        """Fail early, with a message, on data this model cannot score."""
        if self.x_shape is not None and tuple(x.shape[1:]) != tuple(self.x_shape):
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

    # -- what evaluation, representations and figures ask of every model ---------------------------
    def recorded(self) -> Any:
        """The object a run records and describes for this model: itself (a wrapped pair: the
        object it wraps)."""
        return self

    def store_prefix(self) -> str | None:
        """The prefix of this model's names in Pyro's parameter store (``"vae$$$"``), under which
        checkpoints keep optimiser state relative to the model; None where the model names its
        parameters itself."""
        return f"{self.name}$$$"

    def representation(self, x: Tensor) -> tuple[Tensor, Distribution | None, dict[str, Tensor]]:
        """The latent a representation of ``x`` reads ("the traversed latent"): its point summary
        ``(N, D)``, q of it (``None``: the model has none), and extra per-example outputs.

        By default ``latent_mean(x)`` and ``encode(x)`` (None for a model without ``encode``); a
        model whose ``latent_mean`` is more than that latent (the label models' ``[z, onehot(y)]``)
        says so by overriding this.
        """
        encode = getattr(self, "encode", None)  # a model need not say what q of its latent is
        return self.latent_mean(x), encode(x) if callable(encode) else None, {}

    def latent_prior(self) -> Distribution | None:
        """The prior of the traversed latent where it has a density in closed form, else None (the
        hierarchical VAE's z1, whose prior is the marginal of p(z2) p(z1|z2))."""
        return self.prior()

    def latent_prior_sample(self, n: int) -> Tensor:
        """``n`` draws ``(n, D)`` of the traversed latent from its prior."""
        return self.prior().sample((n,))

    def decoder_input(self, z: Tensor, label: int | None = None) -> Tensor:
        """The point ``decode_mean`` takes (``latent_mean``'s space) for values ``z`` ``(N, D)`` of
        the traversed latent, drawn without data (a traversal from the prior): ``z`` itself.

        A model over labelled data (:attr:`num_classes`) puts class ``label`` next to z and
        overrides this; here a label is refused, since the model has none to condition on.
        """
        if label is not None:
            raise ConfigError(
                f"label={label!r}: {type(self.recorded()).__name__} is not conditioned on labels, "
                "so there is no class to set; leave label out"
            )
        return z

    def vamp_component(self, u: Tensor) -> Distribution:
        """The VampPrior's components for pseudo-inputs ``u`` (:class:`~pyro_vae.priors.VampPrior`):
        by default ``q.prior_component(encoder(u))``, q(z|u) for Gaussian guides and the Gaussian base
        of a flow guide."""
        return self.q.prior_component(self.encoder(u))


def _no_pair(*args: Any, **kwargs: Any) -> None:
    raise ConfigError("this object has no Pyro model/guide pair; give it .model and .guide methods")


class PyroPair(Model):
    """A Pyro model/guide pair that is not a :class:`Model`, wrapped once where it enters pyro-vae
    (:func:`as_model`), so that nothing below that boundary asks what it was given.

    ``model_fn``/``guide_fn`` are the pair; ``owners`` the ``nn.Module``s they belong to (put in eval
    mode, moved to the device and, for a single owner, saved: its state dict is the pair's). It
    trains with the default plan under any objective, names its parameters in Pyro's store itself,
    and has no representation, prior or figures of its own.
    """

    def __init__(
        self, model_fn: Callable, guide_fn: Callable, owners: Sequence[nn.Module], source: Any
    ) -> None:
        super().__init__()
        self.parts = nn.ModuleList(owners)
        self.__dict__["model_fn"], self.__dict__["guide_fn"] = model_fn, guide_fn
        self.__dict__["source"] = source
        self.name = type(source).__name__
        shape = getattr(source, "x_shape", None)  # checked against the data where it is declared
        self.x_shape = tuple(shape) if shape is not None else None  # type: ignore[assignment]
        self.training = all(m.training for m in owners) if owners else True

    def model(self, *args: Any, **kwargs: Any) -> Any:
        return self.model_fn(*args, **kwargs)

    def guide(self, *args: Any, **kwargs: Any) -> Any:
        return self.guide_fn(*args, **kwargs)

    def store_prefix(self) -> None:
        return None

    def recorded(self) -> Any:
        return self.source

    def check_data(self, x: Tensor) -> None:
        if self.x_shape is not None:
            super().check_data(x)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        if len(self.parts) == 1:
            return self.parts[0].state_dict(*args, **kwargs)
        return super().state_dict(*args, **kwargs)

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        if len(self.parts) == 1:
            return self.parts[0].load_state_dict(state, strict=strict, assign=assign)
        return super().load_state_dict(state, strict=strict, assign=assign)

    # an object that is not a Model may still have the methods a Model's representation uses
    def representation(self, x: Tensor) -> tuple[Tensor, Distribution | None, dict[str, Tensor]]:
        latent_mean = getattr(self.source, "latent_mean", None)
        if not callable(latent_mean) and self.guide_fn is not _no_pair:
            return _guide_latent(self.guide_fn, x)
        if not callable(latent_mean):
            raise ConfigError(
                f"encode needs a model with latent_mean(x) (e.g. a pyro_vae VAE); got "
                f"{type(self.source).__name__}"
            )
        encode = getattr(self.source, "encode", None)
        return latent_mean(x), encode(x) if callable(encode) else None, {}

    def latent_prior(self) -> Distribution | None:
        prior = getattr(self.source, "prior", None)
        if not callable(prior):
            raise ConfigError(
                f"{type(self.source).__name__} has no prior() to compare its latent with; give it one"
            )
        return prior()

    def latent_prior_sample(self, n: int) -> Tensor:
        return self.latent_prior().sample((n,))  # type: ignore[union-attr]


def _guide_latent(guide: Callable, x: Tensor) -> tuple[Tensor, Distribution, dict[str, Tensor]]:
    """The representation a guide function gives ``x``: its one latent site's q, and q's mean
    (the mean of 64 draws where q has none in closed form)."""
    trace = poutine.trace(guide).get_trace(x)
    latent = [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    ]
    if len(latent) != 1:
        names = ", ".join(s["name"] for s in latent) or "none"
        raise ConfigError(
            f"a representation reads the one latent site of the guide, but it samples {names}; "
            "pass an object with latent_mean(x) instead"
        )
    q = latent[0]["fn"]
    try:
        mean = q.mean
    except NotImplementedError:
        mean = q.sample((64,)).mean(0)
    return mean, q, {}


def as_model(
    obj: Any, guide: Callable | None = None, *, caller: str = "train", pair: bool = True
) -> Model:
    """``obj`` as a :class:`Model`: itself if it is one, else wrapped in a :class:`PyroPair`.

    ``obj`` is an object with ``model`` and ``guide`` methods (a VAE, any ``nn.Module`` or not), or,
    with ``guide``, a Pyro model function. The modules put in eval mode are ``obj`` and ``guide``
    where they are ``nn.Module``s and the modules that own them where they are bound methods
    (``vae.model``): plain functions have no train/eval mode, and are run as they are.
    ``pair=False`` also takes an object without ``model``/``guide`` (a representation of data needs
    only ``latent_mean``).
    """
    if guide is None and isinstance(obj, Model):
        return obj
    if guide is None and not pair and not callable(getattr(obj, "guide", None)):
        return PyroPair(_no_pair, _no_pair, [obj] if isinstance(obj, nn.Module) else [], obj)
    if guide is None:
        fns = getattr(obj, "model", None), getattr(obj, "guide", None)
        if not all(callable(f) for f in fns):
            raise ConfigError(
                f"{caller} needs an object with .model and .guide methods (e.g. a VAE), or a Pyro "
                f"model function and guide=GUIDE_FUNCTION; got {type(obj).__name__}"
            )
        owners = [obj]
    else:
        fns = obj, guide
        if not all(callable(f) for f in fns):
            raise ConfigError(
                f"{caller}(model, x, ..., guide=guide) needs a callable Pyro model and guide; got "
                f"{type(obj).__name__} and {type(guide).__name__}"
            )
        owners = list(fns)
    owners += [getattr(f, "__self__", None) for f in fns]
    modules: list[nn.Module] = []
    for owner in owners:
        if isinstance(owner, nn.Module) and not any(owner is m for m in modules):
            modules.append(owner)
    return PyroPair(fns[0], fns[1], modules, obj)


#: the constructor arguments every model gets from the library or from :class:`ModelConfig`'s own
#: fields; a model's other keyword arguments are its options (``ModelConfig.model_options``)
SHARED_ARGUMENTS = (
    "x_shape",
    "num_classes",
    "latent_dim",
    "network",
    "network_options",
    "hidden",
    "activation",
    "encoder",
    "decoder",
    "guide",
    "guide_options",
    "prior",
    "prior_options",
    "prior_dim",
    "likelihood",
    "likelihood_options",
    "name",
)

#: name -> a :class:`Model` subclass, built with ``cls.from_config(config, x_shape, num_classes)``.
#: A model's options are the keyword arguments of its ``__init__`` beyond :data:`SHARED_ARGUMENTS`,
#: typed from their annotations: adding one to the signature makes ``--model-opt KEY=VALUE`` (and
#: ``pv.ModelConfig(model_options={KEY: VALUE})``) reach it, checked, with no other change.
MODELS: Registry[type[Model]] = Registry("model", supplied=SHARED_ARGUMENTS)


def takes_options_of(base_init: Callable[..., None]) -> Callable[[_Init], _Init]:
    """Decorate a model's ``__init__`` whose ``**kwargs`` go on to ``base_init``, its base class's:
    its signature then lists the base's own keyword options (those not in :data:`SHARED_ARGUMENTS`
    and not named again) after its own options and before the shared arguments, with their types
    and defaults. :data:`MODELS` types ``--model-opt`` from that signature and
    :func:`~pyro_vae.describe.describe` records by it, so a subclass takes its base's options
    without writing them out again."""
    base = inspect.signature(base_init)

    def decorate(init: _Init) -> _Init:
        own = inspect.signature(init)
        params = list(own.parameters.values())
        inherited = [
            p
            for p in base.parameters.values()
            if p.kind is p.KEYWORD_ONLY
            and p.name not in own.parameters
            and p.name not in SHARED_ARGUMENTS
        ]
        at = next(
            (
                i
                for i, p in enumerate(params)
                if (p.kind is p.KEYWORD_ONLY and p.name in SHARED_ARGUMENTS)
                or p.kind is p.VAR_KEYWORD
            ),
            len(params),
        )
        init.__signature__ = own.replace(  # type: ignore[attr-defined]
            parameters=[*params[:at], *inherited, *params[at:]]
        )
        init.__annotations__ = {
            **init.__annotations__,
            **{p.name: p.annotation for p in inherited},
        }
        return init

    return decorate


def _flag(target: str) -> str:
    return "--" + target.split(".", 1)[1].replace("_", "-")


def _option_flag(key: str) -> str:
    """How the command line sets model option ``key``: its own flag where it has one."""
    aliases = {alias[1]: alias[0] for alias in _model_options_field().metadata.get("aliases", ())}
    return aliases.get(key, f"--model-opt {key}")


def _model_options_field() -> Any:
    return next(f for f in dataclasses.fields(ModelConfig) if f.name == "model_options")


def model_options(cls: type[Model], config: ModelConfig) -> dict[str, Any]:
    """``config.model_options`` typed from ``cls``'s signature; a key it does not take is refused
    with the flag that set it and the models that take it."""
    name = config.model
    what = f"--model {name}" if name in MODELS else f"the model {cls.__name__}"
    takes = MODELS.settable(cls)
    for key in config.model_options:
        if key not in takes and key not in SHARED_ARGUMENTS:
            takers = [n for n in MODELS if key in MODELS.parameters(n)]
            flag = _option_flag(key)
            notes = [f"--model-opt {key}"] if flag != f"--model-opt {key}" else []
            notes += [f"{what} takes {', '.join(takes)}"] if takes else []
            raise ConfigError(
                f"{flag} is not used by {what}; it is an option of "
                f"{', '.join(takers) or 'no registered model'}"
                + (f" ({'; '.join(notes)})" if notes else "")
            )
    return MODELS.options_of(cls, config.model_options, what)


def check_parts_config(m: ModelConfig) -> ModelConfig:
    """Refuse network and latent settings no model can use; return ``m`` with the guide's, prior's
    and likelihood's options typed from their signatures."""
    from ..guides import GUIDES
    from ..likelihoods import LIKELIHOODS
    from ..nn import ACTIVATIONS, NETWORKS
    from ..priors import PRIORS

    if m.latent_dim < 1:
        raise ConfigError(f"--latent-dim must be a positive integer, got {m.latent_dim!r}")
    check_size("--latent-dim", m.latent_dim)
    check_size("--hidden", max(m.hidden, default=1))
    if not m.hidden or any(h < 1 for h in m.hidden):
        raise ConfigError(f"--hidden needs positive layer sizes, got {m.hidden!r}")
    NETWORKS.get(m.network)
    if m.activation not in ACTIVATIONS:
        raise ConfigError(
            f"unknown activation {m.activation!r}: choose one of {', '.join(sorted(ACTIVATIONS))}"
        )
    return dataclasses.replace(
        m,
        guide_options=GUIDES.options(m.guide, m.guide_options),
        prior_options=PRIORS.options(m.prior, m.prior_options),
        likelihood_options=LIKELIHOODS.options(m.likelihood, m.likelihood_options),
        network_options=NETWORKS.options(m.network, m.network_options),
    )


def check_model_options(config: RunConfig, cls: type | None = None) -> dict[str, Any]:
    """Refuse options the model does not read and objectives it does not train with; return its
    options (``config.model.model_options``) typed from its signature.

    ``cls`` is the model's class (by default the registered ``config.model.model``).
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
    options = model_options(cls, config.model)
    what = f"--model {name}" if name in MODELS else f"the model {cls.__name__}"
    for target in sorted((changed_fields(config) & MODEL_SPECIFIC) - cls.options):
        takers = [n for n in MODELS if target in MODELS.get(n).options]
        raise ConfigError(
            f"{_flag(target)} is not used by {what}; it is an option of "
            f"{', '.join(takers) or 'no registered model'}"
        )
    objective = config.train.objective
    if cls.objectives is not None and objective not in cls.objectives:
        takers = [
            n
            for n in MODELS
            if MODELS.get(n).objectives is None or objective in MODELS.get(n).objectives
        ]
        raise ConfigError(
            f"{what} trains with --objective {', '.join(sorted(cls.objectives))}, not {objective}; "
            f"--objective {objective} works with --model {', '.join(takers)}"
        )
    cls.check_options(options, config)
    return options


def part_options(config: ModelConfig) -> dict[str, Any]:
    """The constructor keywords every model shares: its networks, guide, prior and likelihood."""
    return dict(
        network=config.network,
        network_options=config.network_options,
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
    # model options it would ignore are refused, the others typed
    options = check_model_options(RunConfig(model=config), cls)
    config = dataclasses.replace(config, model_options=options)
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
