"""Amortised variational families q(z | x)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
from torch import nn

from ..describe import Described
from ..errors import ConfigError
from ..registry import Registry


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fix(owner: str, option: str) -> str:
    """What to do about a bad option: where it is set on the command line."""
    kind = owner.rsplit(" ", 1)[-1]
    flag = f"--{kind}-opt" if kind in ("guide", "prior", "likelihood") else "the option"
    return f"set it with {flag} {option}=VALUE"


def check_int(value: Any, option: str, owner: str, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int in ``low..high``, else a one-line :class:`ConfigError` naming the option.

    ``owner`` names what takes the option (``"the lowrank guide"``, ``"the flow prior"``).
    """
    if _is_int(value) and low <= value and (high is None or value <= high):
        return int(value)
    bounds = f"at least {low}" if high is None else f"in {low}..{high}"
    raise ConfigError(
        f"{owner}'s option {option} must be an integer {bounds}, got {value!r}; "
        + _fix(owner, option)
    )


def check_float(
    value: Any, option: str, owner: str, *, positive: bool = True, allow_zero: bool = False
) -> float:
    """``value`` as a finite float; positive (or >= 0 with ``allow_zero``) when ``positive``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (not positive or value > 0 or (allow_zero and value == 0)):
        return float(value)
    need = "a finite number"
    if positive:
        need = "a finite non-negative number" if allow_zero else "a finite positive number"
    raise ConfigError(
        f"{owner}'s option {option} must be {need}, got {value!r}; " + _fix(owner, option)
    )


def check_hidden(value: Any, owner: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    """Hidden layer widths: a sequence of positive ints (non-empty unless ``allow_empty``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(
            f"{owner}'s option hidden must be a list of layer widths, got {value!r}; "
            + _fix(owner, "hidden").replace("VALUE", "64,64")
        )
    if not value and not allow_empty:
        raise ConfigError(
            f"{owner}'s option hidden needs at least one hidden layer, got {value!r}; "
            + _fix(owner, "hidden").replace("VALUE", "32")
        )
    for w in value:
        if not _is_int(w) or w < 1:
            raise ConfigError(
                f"{owner}'s option hidden must hold positive layer widths, got {tuple(value)!r}; "
                + _fix(owner, "hidden").replace("VALUE", "64,64")
            )
    return tuple(int(w) for w in value)


class AmortizedGuide(Described, nn.Module):
    """Maps encoder features ``h`` of shape ``(..., feature_dim)`` to q(z|x) with event ``(latent_dim,)``.

    The encoder network is shared and lives in the model; a guide only owns the layers that turn the
    features into the variational distribution, so that any guide fits any encoder.
    Subclasses implement :meth:`forward`.
    """

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        if not _is_int(latent_dim) or latent_dim < 1:
            raise ConfigError(
                f"the latent size must be a positive integer, got {latent_dim!r}; "
                "pass a positive --latent-dim"
            )
        if not _is_int(feature_dim) or feature_dim < 1:
            raise ConfigError(
                f"the encoder's feature size must be a positive integer, got {feature_dim!r}; "
                "give the encoder at least one output feature"
            )
        feature_dim, latent_dim = int(feature_dim), int(latent_dim)
        self.feature_dim = feature_dim
        self.latent_dim = latent_dim

    @property
    def _owner(self) -> str:
        """``"the <registered name> guide"``, for messages about its options."""
        for name in GUIDES.names():
            if GUIDES.get(name) is type(self):
                return f"the {name} guide"
        return f"the {type(self).__name__} guide"

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        raise NotImplementedError

    def mean(self, h: torch.Tensor) -> torch.Tensor:
        """A point summary of q(z|x) for plots: the mean where known, else a sample's mean."""
        q = self(h)
        try:
            return q.mean
        except NotImplementedError:
            return q.rsample((64,)).mean(0)

    def prior_component(self, h: torch.Tensor) -> dist.TorchDistribution:
        """A density of z that can be scored anywhere, for the VampPrior's mixture components.

        By default q(z|x) itself. Flow guides return their Gaussian base instead: planar, radial and
        Sylvester flows have no inverse, so q(z|u) cannot score a z it did not draw.
        """
        return self(h)


GUIDES: Registry[AmortizedGuide] = Registry(
    "guide", base=AmortizedGuide, supplied=("feature_dim", "latent_dim")
)
