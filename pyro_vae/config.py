"""Run configuration: small frozen dataclasses, written to ``config.json`` in every run directory.

A leaf of the package: JSON in and out, and the types of its own fields (:meth:`RunConfig.coerced`);
it imports no part. The fields are the one source of truth for the command line: every field carries
its help text (and flag and metavar where the defaults do not fit) in its metadata, and ``pyro-vae
train``'s options are generated from them (:mod:`pyro_vae.cli`).

Each part owns its options: a guide's, prior's, likelihood's, objective's and model's options are the
keyword arguments of its constructor, kept here as a dict (``guide_options``, ``model_options``, ...)
and typed and checked by the part's registry from its signature. A new model option is therefore one
keyword argument of the model's ``__init__``: ``--model-opt KEY=VALUE`` reaches it with no change
here (a flag of its own is an ``aliases`` entry of ``model_options``). Checking a whole configuration
against every part is the build layer's job (:func:`pyro_vae.build.validate`).
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
    dataset_options: dict[str, Any] = option(
        factory=dict,
        help="data set option, e.g. size=20000 for dsprites",
        flags=("--dataset-opt",),
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


@dataclass(frozen=True)
class ModelConfig:
    """The generative model and its parts, each chosen by registered name."""

    model: str = option("vae", "generative model", metavar="NAME", choices="model")
    latent_dim: int = option(20, "size of z", metavar="D")
    network: str = option("mlp", "encoder/decoder family", metavar="NAME", choices="network")
    network_options: dict[str, Any] = option(
        factory=dict,
        help="network option, e.g. channels=64 blocks=2 (resnet) or layers=6 (pixelcnn)",
        flags=("--network-opt",),
    )
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
    model_options: dict[str, Any] = option(
        factory=dict,
        help="model option, typed from the model's constructor, e.g. labels=100 for m2",
        flags=("--model-opt",),
        aliases=tuple(
            (f"--{key.replace('_', '-')}", key, metavar, text)
            for key, metavar, text in (
                (
                    "latent_dim2",
                    "D",
                    "hvae: size of z2 (default: half of --latent-dim); m1m2: size of M2's z "
                    "(default: --latent-dim)",
                ),
                (
                    "labels",
                    "N",
                    "m2, m1m2, adgm, sdgm: labelled training images (class-balanced, by --seed); "
                    "not with data whose -1 labels mark the unlabelled rows",
                ),
                (
                    "val_labels",
                    "M",
                    "m2, m1m2, adgm, sdgm: labels of the budget kept out of training to pick the "
                    "reported epoch (default: 0, the last epoch is reported)",
                ),
                (
                    "patience",
                    "N",
                    "m2, m1m2, adgm, sdgm: stop once the validation accuracy has not improved for "
                    "N epochs (default: 0, never; needs --val-labels or --val-size)",
                ),
                (
                    "val_size",
                    "N",
                    "m2, m1m2, adgm, sdgm: validation images beyond the label budget whose labels "
                    "pick the reported epoch, counted in the labels used (default: 0)",
                ),
                (
                    "aux_weight",
                    "A",
                    "m2, m1m2, adgm, sdgm: alpha of the classification loss per labelled image "
                    "(default: 50)",
                ),
                (
                    "labelled_every",
                    "K",
                    "m2, m1m2, adgm, sdgm: a labelled batch after every K unlabelled ones (0: one "
                    "labelled pass an epoch) (default: 1)",
                ),
                (
                    "aux_dim",
                    "D",
                    "adgm, sdgm: size of the auxiliary latent a (default: --latent-dim)",
                ),
                (
                    "m1_epochs",
                    "N",
                    "m1m2: epochs that fit M1 before M2 (default: half of --epochs)",
                ),
            )
        ),
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
        d = _moved_options(d)
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

    def coerced(self) -> RunConfig:
        """This configuration with every field coerced to the type its annotation declares (a part's
        options are typed by the part itself: :func:`pyro_vae.build.validate`)."""
        return RunConfig(
            **{
                name: _section(kind, dataclasses.asdict(getattr(self, name)), name)
                for name, kind in SECTIONS.items()
            }
        )


#: fields of configurations written before each model owned its options (pyro-vae 0.1), and their
#: defaults there: a non-default value is read as the model option of that name
_MOVED_TO_MODEL_OPTIONS = (
    ("model", "latent_dim2", 0),
    ("train", "labels", 0),
    ("train", "val_size", None),
    ("train", "aux_weight", None),
    ("train", "labelled_every", 1),
    ("train", "m1_epochs", None),
)


def _moved_options(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with the model options of an older ``config.json`` moved into ``model.model_options``,
    so that old run directories keep loading and resuming."""
    if not any(
        isinstance(d.get(section), dict) and name in d[section]
        for section, name, _ in _MOVED_TO_MODEL_OPTIONS
    ):
        return d
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    model = d.setdefault("model", {})
    if not isinstance(model, dict):
        return d
    moved = model.get("model_options", {})
    moved = dict(moved) if isinstance(moved, dict) else moved
    for section, name, default in _MOVED_TO_MODEL_OPTIONS:
        if isinstance(d.get(section), dict) and name in d[section]:
            value = d[section].pop(name)
            if value != default and isinstance(moved, dict):
                moved.setdefault(name, value)
    model["model_options"] = moved
    return d


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
