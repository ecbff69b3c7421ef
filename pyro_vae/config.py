"""Run configuration: small frozen dataclasses, written to ``config.json`` in every run directory.

The fields are the one source of truth for the command line: every field carries its help text (and
flag and metavar where the defaults do not fit) in its metadata, and ``pyro-vae train``'s options are
generated from them (:mod:`pyro_vae.cli`). :meth:`RunConfig.validate` is the one place a configuration
is checked, whether it came from the CLI, a ``--config`` JSON file or Python: types are coerced from
the field annotations, every part's options from that part's signature, and options that the chosen
model or data set does not read are refused rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .registry import coerce


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    choices: str | None = None,
    default_help: str | None = None,
    aliases: tuple[tuple[str, str, str, str], ...] = (),
) -> Any:
    """A dataclass field with its command-line description.

    ``flags`` default to ``--field-name``; ``choices`` names the registry whose entries the help
    lists; ``default_help`` replaces the printed default where the value is computed (None);
    ``aliases`` are ``(flag, key, metavar, help)`` shortcuts that set one key of a dict option.
    """
    meta = {
        "help": help,
        "flags": flags,
        "metavar": metavar,
        "choices": choices,
        "default_help": default_help,
        "aliases": aliases,
    }
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """What to train on.

    ``dataset`` is a registered data set (:data:`pyro_vae.data.DATASETS`: ``digits``, scikit-learn's
    bundled 8x8 digits; ``mnist``; ``fashion-mnist``), a path to a ``.npz``/``.npy`` file (a ``.npy``
    is memory-mapped) or ``folder:PATH``, a folder of images (class subfolders give labels), read as
    ``image_size`` and ``image_mode`` say. ``loading`` and ``workers`` choose how the training set
    reaches the device: as one tensor, or streamed through a DataLoader.
    ``binarize`` is ``none`` (pixels in [0, 1]), ``dynamic`` (a fresh Bernoulli draw of the training
    set every epoch, the standard for likelihood numbers) or ``static`` (one fixed draw). The test set
    is binarized once, with a fixed seed, under both.
    """

    dataset: str = option(
        "digits",
        "a registered data set, a .npz/.npy path (a .npy is memory-mapped) or folder:PATH (a folder "
        "of images, class subfolders for labels)",
        metavar="NAME",
        choices="dataset",
    )
    data_dir: str | None = option(
        None,
        "where torchvision data sets live",
        metavar="DIR",
        default_help="$PYRO_VAE_DATA or ~/.cache/pyro-vae",
    )
    binarize: str = option(
        "none", "none (pixels in [0,1]), dynamic (redrawn every epoch) or static", metavar="MODE"
    )
    test_fraction: float = option(
        0.2,
        "test share for data sets without a test split (digits, .npy, .npz with x)",
        metavar="F",
    )
    image_size: tuple[int, ...] | None = option(
        None,
        "folder: resize every image to H W (or S for S x S); required when sizes differ",
        metavar="PX",
        default_help="the images' own size",
    )
    image_mode: str | None = option(
        None,
        "folder: L (grayscale) or RGB; every image is converted to it",
        metavar="MODE",
        default_help="the images' own mode, which must agree",
    )
    loading: str = option(
        "auto",
        "auto (the training set as one tensor on the device when it fits, else streamed), device "
        "or stream (batches read through a DataLoader with workers and pinned memory)",
        metavar="MODE",
    )
    workers: int = option(
        2,
        "DataLoader worker processes reading streamed batches (and decoding a folder's images when "
        "it is read whole); 0: in the main process",
        metavar="N",
    )


KL_OPTIONS = ("beta", "kl_anneal", "kl_anneal_start", "free_bits")
#: --fast: Pyro's SVI, or pyro_vae.fast.FastSVI replaying / compiling the captured loss
FAST_MODES = {
    "off": None,
    "eager": None,
    "compile": "default",
    "reduce-overhead": "reduce-overhead",
}


@dataclass(frozen=True)
class ModelConfig:
    """The generative model and its parts, each chosen by registered name."""

    model: str = option("vae", "generative model", metavar="NAME", choices="model")
    latent_dim: int = option(20, "size of z", metavar="D")
    network: str = option("mlp", "encoder/decoder family", metavar="NAME", choices="network")
    hidden: tuple[int, ...] = option(
        (400,), "hidden layer sizes of the encoder (the decoder mirrors them)", metavar="H"
    )
    activation: str = option("relu", "relu, tanh, softplus, elu, gelu or silu", metavar="NAME")
    likelihood: str = option("bernoulli", "p(x|z)", metavar="NAME", choices="likelihood")
    likelihood_options: dict[str, Any] = option(
        factory=dict,
        help="likelihood option, e.g. scale=0.1 learn_scale=true",
        flags=("--likelihood-opt",),
    )
    guide: str = option("diagonal", "variational family q(z|x)", metavar="NAME", choices="guide")
    guide_options: dict[str, Any] = option(
        factory=dict,
        help="guide option, e.g. rank=4 or centred=false",
        flags=("--guide-opt",),
        aliases=(("--flows", "num_flows", "K", "number of flow layers of a flow guide"),),
    )
    prior: str = option("normal", "prior p(z)", metavar="NAME", choices="prior")
    prior_options: dict[str, Any] = option(
        factory=dict, help="prior option, e.g. components=10", flags=("--prior-opt",)
    )
    latent_dim2: int = option(
        0,
        "hvae: size of z2 (0: half of --latent-dim); m1m2: size of M2's z (0: --latent-dim)",
        metavar="D",
    )
    aux_dim: int = option(
        0, "adgm, sdgm: size of the auxiliary latent a (0: --latent-dim)", metavar="D"
    )


@dataclass(frozen=True)
class TrainConfig:
    """How to optimise: objective and its options, Adam, schedule, seed and device."""

    epochs: int = option(30, "passes over the training set", metavar="N")
    batch_size: int = option(128, "data points per step", metavar="B")
    lr: float = option(1e-3, "Adam learning rate", metavar="LR")
    objective: str = option("elbo", "training objective", metavar="NAME", choices="objective")
    particles: int = option(
        1,
        "samples per data point in the objective (vectorised)",
        flags=("--particles", "-k"),
        metavar="K",
    )
    objective_options: dict[str, Any] = option(
        factory=dict,
        help="objective option, e.g. alpha=0.5 for renyi",
        flags=("--objective-opt",),
        aliases=(("--alpha", "alpha", "A", "renyi: the order alpha of the bound"),),
    )
    beta: float = option(
        1.0, "weight on log p(z) - log q(z|x) of the latents (beta-VAE)", metavar="B"
    )
    kl_anneal: int = option(
        0, "epochs of linear KL warm-up from --kl-anneal-start to --beta (0: none)", metavar="N"
    )
    kl_anneal_start: float | None = option(
        None, "KL weight at epoch 0 under --kl-anneal", metavar="W", default_help="0"
    )
    free_bits: float = option(
        0.0, "free bits: KL floor in nats per latent dimension (Kingma et al. 2016)", metavar="L"
    )
    fast: str = option(
        "off",
        "the training step: off (Pyro's SVI), eager (the loss captured once per batch shape and "
        "replayed: the same updates, less Python per step), compile (the captured loss compiled "
        "with torch.compile), reduce-overhead (compiled with CUDA graphs, on a GPU)",
        metavar="MODE",
    )
    seed: int = option(0, "random seed; fixes the result on a given device", metavar="S")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N", metavar="DEV")
    devices: int = option(
        1,
        "processes training data-parallel, one per device (Lightning Fabric, DDP); on CPU, processes",
        metavar="N",
    )
    num_nodes: int = option(1, "machines in a multi-node run (each with --devices)", metavar="N")
    strategy: str = option("auto", "auto (ddp for more than one process) or ddp", metavar="NAME")
    precision: str = option(
        "32-true",
        "32-true, or bf16-mixed (autocast; bounds and log-likelihoods stay float32)",
        metavar="P",
    )
    loggers: tuple[str, ...] = option(
        (),
        "experiment loggers beside metrics.jsonl and the CSV log under logs/",
        flags=("--logger",),
        choices="logger",
        metavar="NAME",
    )
    eval_particles: int = option(
        1, "samples per data point for the per-epoch test ELBO", metavar="K"
    )
    labels: int = option(
        0,
        "m2, m1m2, adgm, sdgm: labelled training images (class-balanced, chosen by --seed; not "
        "with -1 labels, which mark the unlabelled rows)",
        metavar="N",
    )
    val_labels: int = option(
        0,
        "m2, m1m2, adgm, sdgm: labels of the budget kept out of training to pick the reported "
        "epoch (0: the last epoch is reported)",
        metavar="M",
    )
    patience: int = option(
        0,
        "m2, m1m2, adgm, sdgm: stop once the validation accuracy has not improved for N epochs "
        "(0: never; needs --val-labels or --val-size)",
        metavar="N",
    )
    val_size: int | None = option(
        0,
        "m2, m1m2, adgm, sdgm: validation images beyond the label budget whose labels pick the "
        "reported epoch (counted in the labels used; None in an old run: 10% of the training "
        "set, at most 5000)",
        metavar="N",
    )
    aux_weight: float | None = option(
        None,
        "m2, m1m2, adgm, sdgm: alpha of the classification loss per labelled image",
        metavar="A",
        default_help="50",
    )
    labelled_every: int = option(
        1,
        "m2, m1m2, adgm, sdgm: a labelled batch after every k unlabelled ones (0: one labelled "
        "pass an epoch)",
        metavar="K",
    )
    m1_epochs: int | None = option(
        None, "m1m2: epochs that fit M1 before M2", metavar="N", default_help="half of --epochs"
    )


SECTIONS: dict[str, type] = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Any) -> RunConfig:
        if not isinstance(d, dict):
            raise ConfigError(
                f"a configuration is a JSON object with sections data, model and train, "
                f"got {type(d).__name__}"
            )
        unknown = sorted(set(d) - set(SECTIONS))
        if unknown:
            raise ConfigError(
                f"unknown config section(s) {', '.join(unknown)}: the sections are "
                f"{', '.join(SECTIONS)}"
            )
        return cls(
            **{name: _section(kind, d.get(name, {}), name) for name, kind in SECTIONS.items()}
        )

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"the configuration is not valid JSON: {e}") from None

    def replace(self, **sections: dict[str, Any]) -> RunConfig:
        """A copy with fields replaced, e.g. ``config.replace(train={"epochs": 5})``."""
        parts = {
            name: dataclasses.replace(getattr(self, name), **sections.get(name, {}))
            for name in SECTIONS
        }
        return RunConfig(**parts)

    def validate(self, *, model_class: type | None = None, check_data: bool = True) -> RunConfig:
        """This configuration checked and normalised; raises :class:`ConfigError` on anything no run
        can use.

        ``model_class`` is the class of a model passed as an object (its declared options are checked
        instead of the registered model's); ``check_data=False`` skips the data set's options, for
        data passed as an object.

        Field types are coerced from the annotations, and each part's options (guide, prior,
        likelihood, objective) from that part's signature, so ``{"centred": "False"}`` becomes
        ``False``. Names must be registered; options that the chosen model or data set does not read
        are refused (:func:`pyro_vae.models.check_model_options`).
        """
        from .data import check_data_options
        from .guides import GUIDES
        from .likelihoods import LIKELIHOODS
        from .models import check_model_options
        from .nn import NETWORKS
        from .objectives import OBJECTIVES
        from .priors import PRIORS

        config = RunConfig(
            **{
                name: _section(kind, dataclasses.asdict(getattr(self, name)), name)
                for name, kind in SECTIONS.items()
            }
        )
        t, m, d = config.train, config.model, config.data
        for name, value in [
            ("--epochs", t.epochs),
            ("--batch-size", t.batch_size),
            ("--particles", t.particles),
            ("--eval-particles", t.eval_particles),
            ("--latent-dim", m.latent_dim),
        ]:
            if value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        # sizes past these are typos (2**40 for 240), not experiments: refuse them before they
        # become an allocation of terabytes
        for name, value, cap in [
            ("--latent-dim", m.latent_dim, 2**16),
            ("--latent-dim2", m.latent_dim2, 2**16),
            ("--aux-dim", m.aux_dim, 2**16),
            ("--hidden", max(m.hidden, default=1), 2**16),
            ("--particles", t.particles, 10**5),
            ("--eval-particles", t.eval_particles, 10**5),
            ("--batch-size", t.batch_size, 2**31),
            ("--epochs", t.epochs, 10**7),
        ]:
            if value > cap:
                raise ConfigError(f"{name} {value} is larger than pyro-vae allows ({cap})")
        if m.latent_dim2 < 0 or m.aux_dim < 0:
            raise ConfigError(
                f"--latent-dim2 and --aux-dim must be 0 or positive, got {m.latent_dim2}, {m.aux_dim}"
            )
        if not 0 <= t.seed < 2**32:
            raise ConfigError(f"--seed must lie in 0..{2**32 - 1}, got {t.seed}")
        if min(t.labels, t.val_labels, t.labelled_every) < 0 or (
            t.val_size is not None and t.val_size < 0
        ):
            raise ConfigError(
                "--labels, --val-labels, --val-size, --patience and --labelled-every must not be "
                "negative"
            )
        if t.m1_epochs is not None and not 0 <= t.m1_epochs < t.epochs:
            raise ConfigError(
                f"--m1-epochs must lie in 0..{t.epochs - 1} (M2 needs at least one of the "
                f"--epochs {t.epochs}), got {t.m1_epochs!r}"
            )
        if t.aux_weight is not None and not t.aux_weight >= 0:
            raise ConfigError(f"--aux-weight must be non-negative, got {t.aux_weight!r}")
        if not t.lr > 0:
            raise ConfigError(f"--lr must be positive, got {t.lr!r}")
        for name, value in (("--beta", t.beta), ("--free-bits", t.free_bits)):
            if value < 0:
                raise ConfigError(f"{name} must be at least 0, got {value!r}")
        if t.kl_anneal < 0:
            raise ConfigError(
                f"--kl-anneal must be a whole number of epochs >= 0, got {t.kl_anneal}"
            )
        if t.kl_anneal_start is not None:
            if t.kl_anneal == 0:
                raise ConfigError(
                    "--kl-anneal-start needs --kl-anneal EPOCHS, the length of the warm-up"
                )
            if t.kl_anneal_start < 0:
                raise ConfigError(f"--kl-anneal-start must be at least 0, got {t.kl_anneal_start}")
        if not m.hidden or any(h < 1 for h in m.hidden):
            raise ConfigError(f"--hidden needs positive layer sizes, got {m.hidden!r}")
        if t.fast not in FAST_MODES:
            raise ConfigError(f"unknown --fast {t.fast!r}: choose one of {', '.join(FAST_MODES)}")
        if d.binarize not in ("none", "dynamic", "static"):
            raise ConfigError(
                f"unknown binarization {d.binarize!r}: choose one of none, dynamic, static"
            )
        if not 0 < d.test_fraction < 1:
            raise ConfigError(f"--test-fraction must lie in (0, 1), got {d.test_fraction!r}")
        NETWORKS.get(m.network)
        from .nn import ACTIVATIONS

        if m.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {m.activation!r}: choose one of {', '.join(sorted(ACTIVATIONS))}"
            )
        for key in t.objective_options:
            if key in KL_OPTIONS:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(
                    f"{key} is a training option of its own ({flag}), not an objective option"
                )
        config = config.replace(
            model={
                "guide_options": GUIDES.options(m.guide, m.guide_options),
                "prior_options": PRIORS.options(m.prior, m.prior_options),
                "likelihood_options": LIKELIHOODS.options(m.likelihood, m.likelihood_options),
            },
            train={"objective_options": OBJECTIVES.options(t.objective, t.objective_options)},
        )
        from .engine import check_engine_options
        from .loggers import check_loggers

        check_engine_options(config.train)
        check_loggers(config.train.loggers)
        check_model_options(config, model_class)
        if check_data:
            check_data_options(config.data)
        return config


def default_of(section: str, name: str) -> Any:
    """The default value of the field ``section.name``."""
    f = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def changed_fields(config: RunConfig) -> set[str]:
    """``section.field`` of every field that differs from its default."""
    return {
        f"{section}.{f.name}"
        for section in SECTIONS
        for f in dataclasses.fields(SECTIONS[section])
        if getattr(getattr(config, section), f.name) != default_of(section, f.name)
    }


def _section(kind: type, values: Any, section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be an object, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {', '.join(unknown)} in config section {section!r}; "
            f"it has {', '.join(names)}"
        )
    hints = typing.get_type_hints(kind)
    fixed = {}
    for key, value in values.items():
        what = f"{section}.{key} (--{key.replace('_', '-')})"
        if typing.get_origin(hints[key]) is dict:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise ConfigError(f"{what} must be an object of KEY: VALUE options, got {value!r}")
            fixed[key] = dict(value)
        else:
            fixed[key] = coerce(value, hints[key], what)
    return dataclasses.replace(kind(), **fixed)
