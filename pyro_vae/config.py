"""Run configuration: small frozen dataclasses, written to ``config.json`` in every run directory."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """What to train on.

    ``dataset`` is ``digits`` (scikit-learn's bundled 8x8 digits), ``mnist``, ``fashion-mnist`` or a path
    to a ``.npz``/``.npy`` file. ``binarize`` is ``none`` (pixels in [0, 1]), ``dynamic`` (a fresh
    Bernoulli draw of the training set every epoch, the standard for likelihood numbers) or ``static``
    (one fixed draw). The test set is binarized once, with a fixed seed, under both.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    binarize: str = "none"
    test_fraction: float = 0.2


@dataclass(frozen=True)
class ModelConfig:
    """The generative model and its parts, each chosen by registered name."""

    model: str = "vae"
    latent_dim: int = 20
    network: str = "mlp"
    hidden: tuple[int, ...] = (400,)
    activation: str = "relu"
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    guide: str = "diagonal"
    guide_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    # hvae: size of the second stochastic layer z2 (0: half of latent_dim); m1m2: size of M2's z
    # (0: latent_dim)
    latent_dim2: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """How to optimise: objective and its options, Adam, schedule, seed and device."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    objective: str = "elbo"
    particles: int = 1
    objective_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    eval_particles: int = 1
    # semi-supervised models (m2): labelled training images (class-balanced, chosen by the seed),
    # validation images held out of the unlabelled rest (None: 10%, at most 5000), alpha of the
    # auxiliary classification loss (None: 50 per labelled image), and a labelled batch after every
    # k unlabelled ones (0: one pass over the labelled set per epoch, spread evenly)
    labels: int = 0
    val_size: int | None = None
    aux_weight: float | None = None
    labelled_every: int = 1
    # m1m2: epochs that fit M1 before M2 trains on its features (None: half of the epochs)
    m1_epochs: int | None = None


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
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        parts = {}
        for f in dataclasses.fields(cls):
            sub = f.default_factory()  # type: ignore[misc]
            parts[f.name] = _replace_from(sub, d.get(f.name, {}), f.name)
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def validate(self) -> RunConfig:
        """Raise :class:`ConfigError` on values no run can use; returns ``self``."""
        t, m, d = self.train, self.model, self.data
        for name, value in [
            ("--epochs", t.epochs),
            ("--batch-size", t.batch_size),
            ("--particles", t.particles),
            ("--eval-particles", t.eval_particles),
            ("--latent-dim", m.latent_dim),
        ]:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if t.labels < 0 or (t.val_size is not None and t.val_size < 0) or t.labelled_every < 0:
            raise ConfigError("--labels, --val-size and --labelled-every must not be negative")
        if t.m1_epochs is not None and not 0 <= t.m1_epochs < t.epochs:
            raise ConfigError(
                f"--m1-epochs must lie in 0..{t.epochs - 1} (M2 needs at least one of the "
                f"--epochs {t.epochs}), got {t.m1_epochs!r}"
            )
        if t.aux_weight is not None and not t.aux_weight >= 0:
            raise ConfigError(f"--aux-weight must be non-negative, got {t.aux_weight!r}")
        if not t.lr > 0:
            raise ConfigError(f"--lr must be positive, got {t.lr!r}")
        if not m.hidden or any(h < 1 for h in m.hidden):
            raise ConfigError(f"--hidden needs positive layer sizes, got {m.hidden!r}")
        if d.binarize not in ("none", "dynamic", "static"):
            raise ConfigError(
                f"unknown binarization {d.binarize!r}: choose one of none, dynamic, static"
            )
        if not 0 < d.test_fraction < 1:
            raise ConfigError(f"test_fraction must lie in (0, 1), got {d.test_fraction!r}")
        return self


def _replace_from(obj: Any, values: dict[str, Any], section: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {section!r} must be an object, got {values!r}")
    names = {f.name: f for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(unknown)} in config section {section!r}")
    # JSON has no tuples; restore them so that loaded configs compare equal to the originals
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return dataclasses.replace(obj, **fixed)
