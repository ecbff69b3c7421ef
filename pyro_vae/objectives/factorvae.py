from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import OBJECTIVES
from .importance import DATA_PLATE
from .latent import LatentObjective, Latents


def permute_dims(z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each latent dimension shuffled across the batch independently (Kim and Mnih 2018, Alg. 1):
    a draw from the product of q(z)'s marginals."""
    b, d = z.shape
    idx = torch.argsort(torch.rand(b, d, generator=generator).to(z.device), dim=0)
    return torch.gather(z, 0, idx)


def discriminator(latent_dim: int, hidden: Sequence[int]) -> nn.Sequential:
    """Kim and Mnih's discriminator: an MLP with leaky ReLUs (slope 0.2) to one logit, the log odds
    that a code came from q(z) rather than from the product of its marginals."""
    layers: list[nn.Module] = []
    width = latent_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


class FactorVAE(LatentObjective):
    r"""FactorVAE (Kim and Mnih 2018, eq. 2): the ELBO less ``gamma`` times the total correlation of
    q(z), estimated by a discriminator D with the density-ratio trick:

    .. math::
        \mathcal{L} = \mathrm{ELBO} - \gamma\, \mathbb{E}_{q(z)}\!\left[\log \frac{D(z)}{1 - D(z)}\right]

    D (``disc_hidden`` hidden layers, Adam at ``disc_lr`` with betas (0.5, 0.9), the paper's
    settings) is trained to tell codes of the batch from codes whose dimensions were shuffled
    across the batch (:func:`permute_dims`) by :meth:`auxiliary_step`, which the training plan
    calls after each of the model's steps; the model's loss does not move D. D is built at the
    first step, once the latent size is known.
    """

    name = "factorvae"

    def __init__(
        self,
        num_particles: int = 1,
        gamma: float = 35.0,
        disc_hidden: Sequence[int] = (1000,) * 6,
        disc_lr: float = 1e-4,
        max_plate_nesting: int = 1,
        data_plate: str = DATA_PLATE,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting, data_plate)
        if not math.isfinite(gamma) or gamma < 0:
            raise ConfigError(f"factorvae option gamma must be a finite number >= 0, got {gamma!r}")
        if not disc_hidden or any(int(h) < 1 for h in disc_hidden):
            raise ConfigError(
                f"factorvae option disc_hidden needs positive sizes, got {disc_hidden}"
            )
        if not math.isfinite(disc_lr) or disc_lr <= 0:
            raise ConfigError(f"factorvae option disc_lr must be positive, got {disc_lr!r}")
        self.gamma = float(gamma)
        self.disc_hidden = tuple(int(h) for h in disc_hidden)
        self.disc_lr = float(disc_lr)
        self.discriminator: nn.Sequential | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending: dict[str, Any] | None = None

    def _discriminator(self, z: torch.Tensor) -> nn.Sequential:
        if self.discriminator is None:
            # drawn from the seeded random state without advancing it: building D at the first
            # step must not change the draws the model's step makes
            with torch.random.fork_rng(devices=[]):
                net = discriminator(z.shape[1], self.disc_hidden)
            self.discriminator = net.to(z.device, z.dtype)
            self.optimizer = torch.optim.Adam(
                self.discriminator.parameters(), lr=self.disc_lr, betas=(0.5, 0.9)
            )
            if self._pending is not None:
                self._load(self._pending)
        elif self.discriminator[0].in_features != z.shape[1]:
            raise ConfigError(
                f"this factorvae objective's discriminator was built for {self.discriminator[0].in_features} "
                f"latent dimensions, not {z.shape[1]}; build a new objective for another model"
            )
        return self.discriminator

    def tc_logits(self, z: torch.Tensor) -> torch.Tensor:
        """D's log odds per code ``(B,)``, with D's parameters held fixed (the model's loss)."""
        d = self._discriminator(z)
        for p in d.parameters():
            p.requires_grad_(False)
        try:
            return d(z.to(d[0].weight.dtype)).squeeze(-1).to(z.dtype)
        finally:
            for p in d.parameters():
                p.requires_grad_(True)

    def particle_loss(self, draw: Latents) -> torch.Tensor:
        tc = self.tc_logits(draw.z)
        return draw.elbo_loss() + self.gamma * (draw.scale * tc).sum()

    def auxiliary_step(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """One step of D on the batch: codes from q(z|x) against their dimension-shuffled copies,
        by logistic loss. Returns that loss."""
        with torch.no_grad():
            z = self.latents(model, guide, *args, **kwargs).z
        d = self._discriminator(z)
        z = z.to(d[0].weight.dtype)
        real, fake = d(z).squeeze(-1), d(permute_dims(z)).squeeze(-1)
        loss = 0.5 * (
            nn.functional.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + nn.functional.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
        assert self.optimizer is not None
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        if self.discriminator is None or self.optimizer is None:
            return {}
        return {
            "discriminator": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if self.discriminator is None:
            self._pending = dict(state)  # loaded when D is built, at the first step
            return
        self._load(state)

    def _load(self, state: Mapping[str, Any]) -> None:
        assert self.discriminator is not None and self.optimizer is not None
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._pending = None


@OBJECTIVES.register("factorvae")
def factorvae(
    num_particles: int = 1,
    gamma: float = 35.0,
    disc_hidden: tuple[int, ...] = (1000,) * 6,
    disc_lr: float = 1e-4,
) -> FactorVAE:
    """FactorVAE: ``gamma`` on the discriminator's total-correlation estimate; ``disc_hidden``,
    ``disc_lr`` the discriminator's layers and learning rate (:class:`FactorVAE`)."""
    return FactorVAE(num_particles, gamma, disc_hidden, disc_lr)
