from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import OBJECTIVES
from .importance import DATA_PLATE, ImportanceWeightedELBO, log_mean_exp


class Renyi(ImportanceWeightedELBO):
    r"""The variational Rényi bound of Li and Turner (2016), eq. 13, estimated with K particles:

    .. math:: \mathcal{L}_\alpha(x) = \frac{1}{1-\alpha}
        \log \frac{1}{K} \sum_{k=1}^K \Big(\frac{p(x, z_k)}{q(z_k|x)}\Big)^{1-\alpha},

    per data point, summed over the batch (times ``N_total / N`` under a subsampled data plate).
    ``alpha = 0`` is the IWAE bound; ``alpha -> 1`` is the ELBO (the mean of the log weights, used
    exactly at ``alpha = 1``); ``alpha < 1`` keeps a lower bound on log p(x) for every K.

    The bound is taken per data point of the plate named ``data_plate``, so local latents (one z per
    image) are weighted image by image, as Pyro's ``RenyiELBO`` (1.9) does too: with
    ``vectorize_particles=True`` and the same ``max_plate_nesting`` the two give the same loss and
    gradients on the same draws for a reparameterised guide inside the data plate. They differ under
    a subsampled data plate (here ``N_total / N`` times the sum of the per-datum bounds; Pyro raises
    each weight to the power ``N_total / N``), for a per-datum plate of another name, for latents per
    datum and cell, at ``alpha = 1`` (Pyro refuses) and for score-function guides (here refused):
    see :mod:`~pyro_vae.objectives.importance`.
    """

    def __init__(
        self,
        num_particles: int = 1,
        alpha: float = 0.0,
        max_plate_nesting: int = 1,
        data_plate: str = DATA_PLATE,
    ) -> None:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
        ):
            raise ConfigError(f"--alpha must be a finite number, got {alpha!r}")
        if num_particles == 1 and alpha != 0:
            # with one particle the bound is log w for every alpha: the option would do nothing
            raise ConfigError(
                f"--alpha {alpha:g} has no effect with one particle (the Renyi bound with K=1 is "
                "the ELBO for every alpha); pass --particles 2 or more"
            )
        super().__init__(num_particles, max_plate_nesting, data_plate)
        self.alpha = float(alpha)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        if self.alpha == 1.0:
            return log_w.mean(0)
        return log_mean_exp((1.0 - self.alpha) * log_w, 0) / (1.0 - self.alpha)


@OBJECTIVES.register("renyi")
def renyi(
    num_particles: int = 1,
    alpha: float = 0.0,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> Renyi:
    """The Rényi bound of order ``alpha`` (``--alpha``) with ``num_particles`` particles."""
    return Renyi(num_particles, alpha, max_plate_nesting, data_plate)
