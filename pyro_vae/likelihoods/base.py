"""The observation model p(x | decoder output)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions import TorchDistribution
from torch import nn

from ..describe import Described
from ..errors import DataError
from ..registry import Registry


class Likelihood(Described, nn.Module):
    """Maps the decoder's output ``(..., *x_shape)`` to a distribution whose event is one datum.

    Subclasses implement :meth:`dist` and :meth:`mean`, and say which data they accept in
    :meth:`check`, so that bad data fail with a message before training starts.

    ``discrete_bins`` is the contract for likelihoods reported in bits per dimension: the number of
    levels ``k / (bins - 1)`` in [0, 1] over which :meth:`dist` is a probability distribution
    (a probability mass function, so ``-log p(x)`` is a code length), or ``None`` for a density or a
    loss that is not a distribution over quantized data. ``out_shape`` is the shape of the decoder
    output :meth:`dist` takes (the data's, unless a datum needs more parameters than values).
    """

    discrete_bins: int | None = None

    def __init__(self, x_shape: Sequence[int]) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.x_shape

    def forward(self, out: torch.Tensor) -> TorchDistribution:
        return self.dist(out)

    def dist(self, out: torch.Tensor) -> TorchDistribution:
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """The expected datum, used for reconstructions and sample grids."""
        raise NotImplementedError

    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`DataError` if ``x`` lies outside this likelihood's support."""


def check_unit_interval(x: torch.Tensor, name: str) -> None:
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise DataError(
            f"the {name} likelihood needs data in [0, 1], but the data range over [{lo:g}, {hi:g}]; "
            "rescale the data (e.g. divide 8-bit images by 255) or use --likelihood gaussian"
        )


LIKELIHOODS: Registry[Likelihood] = Registry("likelihood", base=Likelihood, supplied=("x_shape",))
