"""Per-data-point importance weights from the traces of any model/guide pair, and the bound family built on them.

Pyro's own importance machinery (:func:`pyro.infer.importance.vectorized_importance_weights`) sums the
log weights over the batch, so it cannot give a per-image bound, and its ``RenyiELBO`` is reported wrong
or suboptimal for local latents (pyro-ppl/pyro issues 3104 and 2220). Here the guide and the model run
once under a particle plate (dim ``-(max_plate_nesting + 1)``), as Pyro's vectorised ELBOs do, and every
sample site's log density is reduced to one number per (particle, data point): the dim of the plate
named ``data`` is kept and every other plate dim is summed out. Sites outside the data plate (global
latents) couple the data points, so when there are any the whole batch counts as one data point.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from ..errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "num_particles_vectorized"


def data_dim(site: dict[str, Any], data_plate: str = DATA_PLATE) -> int | None:
    """The (negative) batch dim of the plate named ``data_plate`` at this site, or ``None``."""
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate and frame.vectorized:
            return frame.dim
    return None


def per_datum(
    t: torch.Tensor, site: dict[str, Any], max_plate_nesting: int, data_plate: str = DATA_PLATE
) -> tuple[torch.Tensor, bool]:
    """Reduce a batch-shaped tensor of a site (e.g. its ``log_prob``) to ``(K or 1, N or 1)``.

    Returns the tensor and whether the site lies inside the data plate. Every plate dim other than the
    particle dim and the data dim is summed out.
    """
    nd = max_plate_nesting + 1
    if not torch.is_tensor(t):
        t = torch.as_tensor(t)
    if t.dim() < nd:
        t = t.reshape((1,) * (nd - t.dim()) + t.shape)
    elif t.dim() > nd:  # dims left of the particle plate (e.g. enumeration) are summed out
        t = t.sum(tuple(range(t.dim() - nd)))
    ddim = data_dim(site, data_plate)
    other = [d for d in range(-nd + 1, 0) if d != ddim]
    if other:
        t = t.sum(other, keepdim=True)
    return t.reshape(t.shape[0], -1), ddim is not None


def particle_plate(num_particles: int, max_plate_nesting: int) -> pyro.plate:
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))


def importance_traces(
    model: Any,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    max_plate_nesting: int = 1,
) -> tuple[Trace, Trace]:
    """One vectorised guide trace with ``num_particles`` particles and the model replayed against it.

    Uses Pyro's :func:`~pyro.infer.enum.get_importance_trace`, so shapes are validated as in Pyro's
    own ELBOs and ``log_prob`` (including each site's ``scale``) is computed at every site.
    """
    return get_importance_trace(
        "flat",
        max_plate_nesting + 1,
        particle_plate(num_particles, max_plate_nesting)(model),
        particle_plate(num_particles, max_plate_nesting)(guide),
        args,
        kwargs,
    )


def trace_log_weights(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> torch.Tensor:
    r"""``log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n)``, shape ``(K, N)``.

    Summed over every model sample site (observed and latent) minus every guide sample site. With a
    latent outside the data plate the batch is one data point and the shape is ``(K, 1)``.
    """
    terms, local = [], True
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            t, is_local = per_datum(site["log_prob"], site, max_plate_nesting, data_plate)
            terms.append(sign * t)
            local = local and is_local
    if not terms:
        raise ConfigError("the model has no sample sites, so there is nothing to weigh")
    if local:
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return total
    # a global latent couples the data points: the batch is a single importance-weighted datum
    return sum(t.sum(-1, keepdim=True) for t in terms)


def log_weights(
    model: Any,
    guide: Any,
    *args: Any,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-data-point log importance weights ``(num_particles, N)`` of any model/guide pair."""
    model_trace, guide_trace = importance_traces(
        model, guide, args, kwargs, num_particles, max_plate_nesting
    )
    return trace_log_weights(model_trace, guide_trace, max_plate_nesting, data_plate)


def log_mean_exp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


def check_reparameterized(guide_trace: Trace, objective: str) -> None:
    for name, site in guide_trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and not site["fn"].has_rsample
        ):
            raise ConfigError(
                f"the {objective} objective needs reparameterized guide sites, but {name!r} is "
                f"drawn from {type(site['fn']).__name__}; use --objective elbo instead"
            )


class ImportanceWeightedELBO(ELBO):
    r"""Base class of bounds that are a function of the per-datum log weights ``log w[k, n]``.

    Subclasses implement :meth:`bound`, mapping ``(K, N)`` log weights to ``(N,)`` per-datum bounds;
    the loss is minus their sum over the batch. Particles are always vectorised (one pass through the
    networks). Guide sites must be reparameterized. Works on the traces of any model/guide pair whose
    plates fit in ``max_plate_nesting`` and whose data plate is named ``data_plate``.
    """

    def __init__(
        self, num_particles: int = 1, max_plate_nesting: int = 1, data_plate: str = DATA_PLATE
    ) -> None:
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(f"--particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.data_plate = data_plate

    # -- the bound -------------------------------------------------------------------------------
    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """``(K, N)`` log weights -> ``(N,)`` per-datum bound."""
        raise NotImplementedError

    # -- Pyro's ELBO interface -------------------------------------------------------------------
    def _get_trace(self, model, guide, args, kwargs):
        return importance_traces(
            model, guide, args, kwargs, self.num_particles, self.max_plate_nesting
        )

    def log_weights(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        if torch.is_grad_enabled():
            check_reparameterized(guide_trace, type(self).__name__)
        return trace_log_weights(model_trace, guide_trace, self.max_plate_nesting, self.data_plate)

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        loss = -self.bound(self.log_weights(model, guide, *args, **kwargs)).sum()
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def replay_trace(trace: Trace, values: dict[str, torch.Tensor]) -> Trace:
    """A copy of ``trace`` whose sample sites take ``values`` (for :func:`pyro.poutine.replay`)."""
    out = trace.copy()
    for name, value in values.items():
        out.nodes[name] = dict(out.nodes[name], value=value)
    return out


__all__ = [
    "DATA_PLATE",
    "ImportanceWeightedELBO",
    "importance_traces",
    "log_mean_exp",
    "log_weights",
    "per_datum",
    "replay_trace",
    "trace_log_weights",
]
