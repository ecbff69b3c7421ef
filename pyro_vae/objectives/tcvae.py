from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import OBJECTIVES
from .importance import DATA_PLATE
from .kl import _factors
from .latent import LatentObjective, Latents

ESTIMATORS = ("mws", "mss")


def log_q_matrix(draw: Latents) -> torch.Tensor:
    """``[i, j, d] = log q(z_id | x_j)``: every code of the batch under every point's posterior.

    Needs a q(z|x) that factorises over the latent dimensions (the diagonal guide)."""
    q = _factors(draw.q)
    if q.event_shape != () or tuple(q.batch_shape) != tuple(draw.z.shape):
        raise ConfigError(
            "the tcvae objective estimates each q(z_d) from univariate factors of q(z|x), so it "
            f"needs a guide that factorises over the latent dimensions (diagonal), not a "
            f"{type(draw.q).__name__}"
        )
    return q.log_prob(draw.z.unsqueeze(1))


def log_importance_weights(batch: int, data_size: int, estimator: str) -> torch.Tensor:
    """``log w[i, j]``, the weight of ``q(z_i | x_j)`` in the estimate of ``q(z_i)``.

    - ``mws``, minibatch-weighted sampling (Chen et al. 2018, eq. S6): ``1 / (N M)`` for every j,
      a lower bound on ``q(z_i)`` whose gap at a full batch (M = N) is a factor ``N``;
    - ``mss``, minibatch-stratified sampling (eq. S7): point i's own posterior ``1 / N``, the next
      point of the batch (cyclically) ``(N - M) / (N M)``, and the remaining ``M - 1`` points
      ``1 / M``, with ``M = B - 1``; each row's weights sum to one. (The authors' code writes the
      ``1 / N`` into the first column of every row rather than the diagonal; here each code is
      weighted under its own posterior, as the estimator's derivation has it.)
    """
    if estimator == "mws":
        return torch.full((batch, batch), -math.log(data_size * batch))
    if batch < 2:
        raise ConfigError("the minibatch-stratified estimator needs batches of at least 2 points")
    m = batch - 1
    w = torch.full((batch, batch), 1.0 / m, dtype=torch.float64)
    i = torch.arange(batch)
    w[i, i] = 1.0 / data_size
    w[i, (i + 1) % batch] = (data_size - m) / (data_size * m)
    return w.log().float()


def decomposition(
    draw: Latents, data_size: int, estimator: str = "mws"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per data point, the three terms the KL splits into (Chen et al. 2018, eq. 2):

    .. math::
        \log q(z|x) - \log p(z) = \underbrace{\log q(z|x) - \log q(z)}_{\text{index-code MI}}
        + \underbrace{\log q(z) - \textstyle\log\prod_d q(z_d)}_{\text{total correlation}}
        + \underbrace{\textstyle\sum_d \log q(z_d) - \log p(z_d)}_{\text{dimension-wise KL}}

    with ``log q(z)`` and ``log q(z_d)`` estimated from the batch (:func:`log_importance_weights`).
    The three sum to ``log q(z|x) - log p(z)`` exactly, whatever the estimate. Returns
    ``(mi, tc, dim_kl)``, each ``(B,)``.
    """
    mat = log_q_matrix(draw)  # (B, B, D)
    logw = log_importance_weights(mat.shape[0], data_size, estimator).to(mat)
    log_qz = torch.logsumexp(logw + mat.sum(2), dim=1)
    log_prod_qzd = torch.logsumexp(logw.unsqueeze(2) + mat, dim=1).sum(1)
    return draw.log_qz - log_qz, log_qz - log_prod_qzd, log_prod_qzd - draw.log_pz


class BetaTCVAE(LatentObjective):
    r"""beta-TCVAE (Chen, Li, Grosse and Duvenaud 2018, eq. 4): the ELBO with its KL term split
    into index-code mutual information, total correlation and dimension-wise KL (:func:`decomposition`),
    weighted ``alpha``, ``beta_tc`` and ``gamma``:

    .. math::
        \mathcal{L} = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \alpha\, I_q(z; n)
            - \beta\, \mathrm{TC}(q(z)) - \gamma \sum_d \mathrm{KL}(q(z_d) \| p(z_d)).

    With all three weights 1 it is the ELBO. ``q(z)`` is estimated on the minibatch with
    minibatch-weighted (``mws``) or minibatch-stratified (``mss``) sampling, both of which need
    the number of data points N of the training set: the training plan sets it
    (:meth:`set_data_size`), a subsampled data plate gives it, or call :meth:`set_data_size`.
    """

    name = "tcvae"

    def __init__(
        self,
        num_particles: int = 1,
        alpha: float = 1.0,
        beta_tc: float = 6.0,
        gamma: float = 1.0,
        estimator: str = "mws",
        max_plate_nesting: int = 1,
        data_plate: str = DATA_PLATE,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting, data_plate)
        for key, v in (("alpha", alpha), ("beta_tc", beta_tc), ("gamma", gamma)):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"tcvae option {key} must be a finite number >= 0, got {v!r}")
        if estimator not in ESTIMATORS:
            raise ConfigError(
                f"tcvae option estimator must be mws (minibatch-weighted sampling) or mss "
                f"(minibatch-stratified sampling), got {estimator!r}"
            )
        self.alpha, self.beta_tc, self.gamma = float(alpha), float(beta_tc), float(gamma)
        self.estimator = estimator
        self.data_size: int | None = None

    def set_data_size(self, n: int) -> None:
        """The number of data points N of the training set (the plan calls this)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"the data set size must be a positive integer, got {n!r}")
        self.data_size = n

    def particle_loss(self, draw: Latents) -> torch.Tensor:
        n = self.data_size if self.data_size is not None else draw.data_size
        if n is None:
            raise ConfigError(
                "the tcvae objective estimates q(z) from the batch and needs the training set's size "
                "N: train it with pyro_vae.train (the plan sets it), or call "
                "objective.set_data_size(N)"
            )
        batch = draw.z.shape[0]
        if n < batch:
            raise ConfigError(f"the data set size {n} is smaller than the batch of {batch} points")
        mi, tc, dim_kl = decomposition(draw, n, self.estimator)
        weighted = self.alpha * mi + self.beta_tc * tc + self.gamma * dim_kl
        return -(draw.log_px.sum() - (draw.scale * weighted).sum())


@OBJECTIVES.register("tcvae")
def tcvae(
    num_particles: int = 1,
    alpha: float = 1.0,
    beta_tc: float = 6.0,
    gamma: float = 1.0,
    estimator: str = "mws",
) -> BetaTCVAE:
    """beta-TCVAE: weights ``alpha`` (index-code MI), ``beta_tc`` (total correlation), ``gamma``
    (dimension-wise KL); ``estimator`` mws or mss (:class:`BetaTCVAE`)."""
    return BetaTCVAE(num_particles, alpha, beta_tc, gamma, estimator)
