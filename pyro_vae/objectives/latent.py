"""The ELBO written out per data point, for objectives that reshape its KL term.

The disentangling objectives (beta-TCVAE, FactorVAE, DIP-VAE) need more than a trace's summed log
densities: the whole batch's q(z|x_j) evaluated at every other point's z_i, the guide's means and
covariances, the latent codes themselves. :class:`LatentObjective` traces the guide, replays the model,
and hands a subclass one :class:`Latents` per particle; the subclass returns that particle's loss.

It works for a model with one latent site (``z``, shape ``(B, D)``) in the plate ``data``; another
model gets a :class:`ConfigError` that says so, as does a guide that lacks what an objective needs
(beta-TCVAE: a q(z|x) that factorises over the dimensions; DIP-VAE: its mean and covariance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from ..describe import Described
from ..errors import ConfigError
from .importance import DATA_PLATE, data_frame


@dataclass
class Latents:
    """One particle's draw: per data point ``n`` of the batch of ``B``,

    - ``z``: the latent codes ``(B, D)``;
    - ``q``: q(z|x), the guide's distribution for the batch (batch shape ``(B,)``);
    - ``log_px``: ``log p(x_n|z_n)`` ``(B,)``, ``log_pz``: ``log p(z_n)`` ``(B,)``,
      ``log_qz``: ``log q(z_n|x_n)`` ``(B,)``;
    - ``scale``: what each data point's latent term is multiplied by in the loss (the KL weight of
      :class:`~pyro_vae.objectives.KLWeighted` and the subsampling factor ``N_total / B``);
    - ``data_size``: ``N_total`` where the data plate is subsampled, else ``None``.
    """

    z: torch.Tensor
    q: Any
    log_px: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    scale: torch.Tensor | float
    data_size: int | None

    def elbo_loss(self) -> torch.Tensor:
        """``-sum_n [log p(x_n|z_n) + scale * (log p(z_n) - log q(z_n|x_n))]``: the ELBO's loss."""
        return -(self.log_px.sum() + (self.scale * (self.log_pz - self.log_qz)).sum())


def _per_datum(site: dict[str, Any], batch: int, data_plate: str) -> torch.Tensor:
    """A site's log density per data point ``(B,)`` (summed over its other dims), scaled as Pyro's
    trace scales it (``compute_log_prob`` applies the site's scale and mask)."""
    lp = site["log_prob"]
    frame = data_frame(site, data_plate)
    if frame is None:  # outside the data plate: spread evenly over the batch
        return lp.sum().expand(batch) / batch
    lp = lp.movedim(frame.dim, 0)
    return lp.reshape(lp.shape[0], -1).sum(1)


class LatentObjective(Described, ELBO):
    """Base of the objectives computed from :class:`Latents`; ``num_particles`` draws, averaged.

    A subclass implements :meth:`particle_loss`. ``name`` is the objective's registered name, for
    messages.
    """

    name = "latent"

    def __init__(
        self, num_particles: int = 1, max_plate_nesting: int = 1, data_plate: str = DATA_PLATE
    ) -> None:
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.data_plate = data_plate

    def latents(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> Latents:
        """One draw from the guide, scored under the model."""
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        guide_trace.compute_log_prob()
        model_trace.compute_log_prob()
        sites = [
            (n, s)
            for n, s in guide_trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]
        if len(sites) != 1:
            raise ConfigError(
                f"the {self.name} objective needs a model with one latent site in the plate "
                f"{self.data_plate!r}; this guide samples {len(sites)} ({', '.join(n for n, _ in sites)})"
            )
        name, g = sites[0]
        frame = data_frame(g, self.data_plate)
        if frame is None:
            raise ConfigError(
                f"the {self.name} objective needs the latent site {name!r} inside the plate "
                f"{self.data_plate!r}"
            )
        if not g["fn"].has_rsample:
            raise ConfigError(f"the {self.name} objective needs a reparameterised guide")
        value = g["value"]
        if value.dim() != 2 or frame.dim != -1:
            raise ConfigError(
                f"the {self.name} objective needs a latent of shape (B, D), the data plate's "
                f"dim first; {name!r} has shape {tuple(value.shape)}"
            )
        batch = value.shape[0]
        z = value
        m = model_trace.nodes[name]
        log_px = torch.zeros(batch, dtype=z.dtype, device=z.device)
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                log_px = log_px + _per_datum(site, batch, self.data_plate)
        # log p(z) and log q(z|x) unscaled per data point; the site's scale is the weight
        log_pz = m["fn"].log_prob(m["value"]).reshape(batch, -1).sum(1)
        log_qz = g["fn"].log_prob(value).reshape(batch, -1).sum(1)
        full = getattr(frame, "full_size", None)
        data_size = int(full) if full is not None and full > batch else None
        return Latents(z, g["fn"], log_px, log_pz, log_qz, g["scale"], data_size)

    def particle_loss(self, draw: Latents) -> torch.Tensor:
        raise NotImplementedError

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError(f"the {self.name} objective does not go through ELBO traces")

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        loss = sum(
            self.particle_loss(self.latents(model, guide, *args, **kwargs))
            for _ in range(self.num_particles)
        )
        loss = loss / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()
