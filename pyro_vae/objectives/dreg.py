from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan
from torch import nn

from ..errors import ConfigError
from .base import OBJECTIVES
from .importance import (
    DATA_PLATE,
    check_reparameterized,
    data_dim,
    log_mean_exp,
    particle_plate,
    replay_trace,
    trace_log_weights_and_scale,
)
from .iwae import IWAE


class _Call(nn.Module):
    """Calls ``owner.<method>``; lets :func:`torch.func.functional_call` swap the owner's parameters."""

    def __init__(self, owner: nn.Module, method: str) -> None:
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.owner, self.method)(*args, **kwargs)


def stop_gradient_guide(guide: Callable) -> Callable:
    """``guide`` run with every parameter of the ``nn.Module`` that owns it detached.

    ``guide`` (or what it wraps, see :func:`inspect.unwrap`) must be a bound method of an
    :class:`torch.nn.Module` holding all of the guide's parameters as ordinary ``nn.Parameter``s,
    e.g. ``vae.guide``, or such a module itself. (Pyro ``PyroModule``s that read their parameters
    from the global param store are not covered: their parameters would not be stopped.) Gradients
    still flow through the *inputs*: replayed latent values keep their path to the encoder.
    """
    fn = inspect.unwrap(guide)
    # a bound method of a module (vae.guide), or a module that is itself the guide
    owner, method = (
        (fn, "forward")
        if isinstance(fn, nn.Module)
        else (getattr(fn, "__self__", None), getattr(fn, "__name__", ""))
    )
    if not isinstance(owner, nn.Module):
        raise ConfigError(
            "the dreg objective needs the guide to be a method of the torch.nn.Module that owns its "
            "parameters (e.g. vae.guide), to evaluate log q(z|x) with those parameters stopped"
        )
    call = _Call(owner, method)

    def detached(*args: Any, **kwargs: Any) -> Any:
        params = {f"owner.{n}": p.detach() for n, p in owner.named_parameters()}
        with warnings.catch_warnings():
            # pyro.module() in the guide warns that the detached tensors are not registered: intended
            warnings.filterwarnings("ignore", message=".*not registered in the param store.*")
            return torch.func.functional_call(call, params, args, kwargs)

    return detached


class DReG(IWAE):
    r"""IWAE with the doubly-reparameterized gradient estimator of Tucker, Lawson, Gu and Maddison
    (2019), eq. 5-7. The value is the IWAE bound; the gradients are

    .. math::
        \nabla_\theta = \sum_k \tilde w_k \nabla_\theta \log w_k, \qquad
        \nabla_\phi = \sum_k \tilde w_k^2 \,
            \frac{\partial \log w_k}{\partial z_k} \frac{\partial z_k}{\partial \phi},
        \qquad \tilde w_k = \frac{w_k}{\sum_j w_j},

    where in :math:`\log w_k = \log p_\theta(x, z_k) - \log q_{\bar\phi}(z_k|x)` the guide's own
    parameters are stopped. The encoder gradient has no score-function term, so its signal-to-noise
    ratio does not vanish as K grows, unlike IWAE's (Rainforth et al. 2018).

    Generic over model/guide pairs: ``log q`` with stopped parameters comes from re-running the guide
    with the parameters of the ``nn.Module`` that owns it detached (:func:`stop_gradient_guide`),
    replaying the latents of the first run. The ``w~^2`` factor is applied by a gradient hook on a
    copy of each latent that only the model and the stopped guide see, so paths through hierarchical
    guides (z2 drawn given z1) and flows are weighted once, not once per level.
    Requirement: the guide is a bound method of an ``nn.Module`` that holds all its parameters.
    """

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        nest = self.max_plate_nesting

        def plate(fn: Callable) -> Callable:
            return particle_plate(self.num_particles, nest)(fn)

        guide_trace = poutine.trace(plate(guide)).get_trace(*args, **kwargs)
        check_reparameterized(guide_trace, "dreg")
        # a view per latent: the model and the stopped guide read it, the guide's own chain does not
        latents = {
            name: site["value"].view_as(site["value"])
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
        }
        replay = replay_trace(guide_trace, latents)
        model_trace = poutine.trace(poutine.replay(plate(model), trace=replay)).get_trace(
            *args, **kwargs
        )
        stopped = stop_gradient_guide(guide)
        q_trace = poutine.trace(poutine.replay(plate(stopped), trace=replay)).get_trace(
            *args, **kwargs
        )
        model_trace.compute_log_prob()
        q_trace.compute_log_prob()
        # per-datum log weights, and N_total / N under a subsampled data plate (else 1)
        log_w, scale = trace_log_weights_and_scale(model_trace, q_trace, nest, self.data_plate)
        loss = -scale * log_mean_exp(log_w.detach(), 0).sum()

        w = torch.softmax(log_w.detach(), 0)  # normalised weights, (K, N)
        for name, z in latents.items():
            if z.requires_grad:
                z.register_hook(_scale_by(w, guide_trace.nodes[name], nest, self.data_plate))
        surrogate = -scale * (w * log_w).sum()
        loss = loss + (surrogate - surrogate.detach())
        warn_if_nan(loss, "loss")
        return loss


def _scale_by(
    w: torch.Tensor, site: dict[str, Any], max_plate_nesting: int, data_plate: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A gradient hook multiplying the gradient of a latent by its particle's weight ``w[k, n]``."""
    event_dims = len(site["fn"].event_shape)
    batch_dims = site["value"].dim() - event_dims
    shape = [1] * batch_dims
    shape[batch_dims - (max_plate_nesting + 1)] = w.shape[0]
    ddim = data_dim(site, data_plate)
    if ddim is not None and w.shape[1] > 1:
        shape[batch_dims + ddim] = w.shape[1]
    else:
        w = w.sum(1, keepdim=True)  # a global log weight: one weight per particle
    scale = w.reshape(shape + [1] * event_dims)
    return lambda g: g * scale


@OBJECTIVES.register("dreg")
def dreg(num_particles: int = 1, max_plate_nesting: int = 1, data_plate: str = DATA_PLATE) -> DReG:
    """IWAE with doubly-reparameterized encoder gradients, ``num_particles`` particles."""
    return DReG(num_particles, max_plate_nesting, data_plate)
