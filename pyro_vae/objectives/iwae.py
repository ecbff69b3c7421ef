from __future__ import annotations

import torch

from .base import OBJECTIVES
from .importance import DATA_PLATE, ImportanceWeightedELBO, log_mean_exp


class IWAE(ImportanceWeightedELBO):
    r"""The importance-weighted bound of Burda, Grosse and Salakhutdinov (2016), eq. 8:

    .. math:: \mathcal{L}_K(x) = \mathbb{E}_{z_{1:K} \sim q(z|x)}
        \Big[\log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k|x)}\Big],

    the log-mean-exp taken per data point over ``K = num_particles`` vectorised particles, then summed
    over the batch (times ``N_total / N`` under a subsampled data plate, see
    :class:`~pyro_vae.objectives.importance.ImportanceWeightedELBO`). ``K = 1`` is the ELBO; the bound tightens monotonically in ``K`` to log p(x).
    """

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_mean_exp(log_w, 0)


@OBJECTIVES.register("iwae")
def iwae(num_particles: int = 1, max_plate_nesting: int = 1, data_plate: str = DATA_PLATE) -> IWAE:
    """The IWAE bound with ``num_particles`` importance samples per data point."""
    return IWAE(num_particles, max_plate_nesting, data_plate)
