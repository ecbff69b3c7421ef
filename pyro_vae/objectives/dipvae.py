from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import OBJECTIVES
from .importance import DATA_PLATE
from .latent import LatentObjective, Latents

VARIANTS = ("i", "ii")


def dip_covariance(draw: Latents, variant: str) -> torch.Tensor:
    r"""The covariance DIP-VAE drives to the identity, over the batch:

    - ``i``: :math:`\mathrm{Cov}_{p(x)}[\mu(x)]`, the covariance of the guide's means (eq. 6);
    - ``ii``: :math:`\mathbb{E}_{p(x)}[\Sigma(x)] + \mathrm{Cov}_{p(x)}[\mu(x)]`, the covariance of
      q(z) itself (eq. 7).

    Population covariances (divided by B), as Kumar et al. and disentanglement_lib compute them.
    """
    try:
        mu = draw.q.mean
        try:
            sigma = draw.q.covariance_matrix  # a full or low-rank Gaussian guide
        except AttributeError:
            sigma = torch.diag_embed(draw.q.variance)  # a factorised one
    except NotImplementedError:
        raise ConfigError(
            "the dipvae objective needs the mean and covariance of q(z|x), which a "
            f"{type(draw.q).__name__} guide does not give; use the diagonal or lowrank guide"
        ) from None
    mu = mu.reshape(draw.z.shape)
    centred = mu - mu.mean(0)
    cov = centred.T @ centred / mu.shape[0]
    if variant == "ii":
        cov = cov + sigma.reshape(-1, *cov.shape).mean(0)
    return cov


def dip_penalty(cov: torch.Tensor, lambda_od: float, lambda_d: float) -> torch.Tensor:
    r""":math:`\lambda_{od} \sum_{i \ne j} C_{ij}^2 + \lambda_d \sum_i (C_{ii} - 1)^2`."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return lambda_od * (off**2).sum() + lambda_d * ((diag - 1) ** 2).sum()


class DIPVAE(LatentObjective):
    r"""DIP-VAE (Kumar, Sattigeri and Balakrishnan 2018, eq. 6-7): the ELBO less a penalty that
    moves a covariance of the latents (:func:`dip_covariance`, ``variant`` i or ii) towards the
    identity:

    .. math::
        \mathcal{L} = \mathrm{ELBO} - N_B \left[\lambda_{od} \sum_{i \ne j} C_{ij}^2
            + \lambda_d \sum_i (C_{ii} - 1)^2\right]

    with ``N_B`` the data points the batch's loss stands for (the penalty is per data point, as the
    ELBO is a sum over them). ``lambda_d`` defaults to ``10 * lambda_od`` for DIP-VAE-I and to
    ``lambda_od`` for DIP-VAE-II (the paper's and disentanglement_lib's settings).
    """

    name = "dipvae"

    def __init__(
        self,
        num_particles: int = 1,
        lambda_od: float = 10.0,
        lambda_d: float | None = None,
        variant: str = "i",
        max_plate_nesting: int = 1,
        data_plate: str = DATA_PLATE,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting, data_plate)
        if variant not in VARIANTS:
            raise ConfigError(f"dipvae option variant must be i or ii, got {variant!r}")
        if lambda_d is None:
            lambda_d = 10.0 * lambda_od if variant == "i" else lambda_od
        for key, v in (("lambda_od", lambda_od), ("lambda_d", lambda_d)):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"dipvae option {key} must be a finite number >= 0, got {v!r}")
        self.lambda_od, self.lambda_d, self.variant = float(lambda_od), float(lambda_d), variant

    def particle_loss(self, draw: Latents) -> torch.Tensor:
        penalty = dip_penalty(dip_covariance(draw, self.variant), self.lambda_od, self.lambda_d)
        points = (draw.scale * torch.ones_like(draw.log_pz)).sum()
        return draw.elbo_loss() + points * penalty


@OBJECTIVES.register("dipvae")
def dipvae(
    num_particles: int = 1,
    lambda_od: float = 10.0,
    lambda_d: float | None = None,
    variant: str = "i",
) -> DIPVAE:
    """DIP-VAE I or II (``variant``), weights ``lambda_od`` and ``lambda_d`` (:class:`DIPVAE`)."""
    return DIPVAE(num_particles, lambda_od, lambda_d, variant)
