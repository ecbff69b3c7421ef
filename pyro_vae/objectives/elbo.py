from __future__ import annotations

import copy

from pyro.infer import ELBO, JitTrace_ELBO, Trace_ELBO
from pyro.util import warn_if_nan

from ..describe import Described
from .base import OBJECTIVES, Objective


class MonteCarloELBO(Described, Trace_ELBO):
    """Pyro's :class:`~pyro.infer.Trace_ELBO`, recording the arguments it was built with."""


@OBJECTIVES.register("elbo")
def elbo(num_particles: int = 1, max_plate_nesting: int = 1) -> Trace_ELBO:
    r"""The Monte Carlo ELBO (Kingma and Welling 2014; Rezende et al. 2014):

    .. math:: \mathcal{L}(x) = \mathbb{E}_{q(z|x)}[\log p(x, z) - \log q(z|x)],

    estimated with ``num_particles`` reparameterised samples drawn in one vectorised pass.
    Pyro's :class:`~pyro.infer.Trace_ELBO`.
    """
    return MonteCarloELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )


class JitTraceELBO(Described, JitTrace_ELBO, Objective):
    """Pyro's :class:`~pyro.infer.JitTrace_ELBO` with ``differentiable_loss`` fixed.

    Pyro 1.9's returns ``loss + (surrogate - surrogate.detach())`` with ``loss`` itself
    differentiable, so autograd of it gives twice the gradient that ``loss_and_grads`` (and SVI)
    uses; here ``loss`` is detached, so both give the same gradient (tests/objectives/test_contract).
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):  # type: ignore[no-untyped-def]
        loss, surrogate_loss = self.loss_and_surrogate_loss(model, guide, *args, **kwargs)
        loss = loss.detach()
        warn_if_nan(loss, "loss")
        return loss + (surrogate_loss - surrogate_loss.detach())

    compiled = True

    def eager(self) -> ELBO:
        """A shallow copy as Pyro's :class:`~pyro.infer.Trace_ELBO`, the loss this one compiles."""
        out = copy.copy(self)
        out.__class__ = Trace_ELBO
        for attr in ("_loss_and_surrogate_loss", "_differentiable_loss", "_loss_and_grads"):
            out.__dict__.pop(attr, None)
        return out


@OBJECTIVES.register("jit-elbo")
def jit_elbo(num_particles: int = 1, max_plate_nesting: int = 1) -> JitTrace_ELBO:
    """:func:`elbo` compiled with the PyTorch JIT (Pyro's :class:`~pyro.infer.JitTrace_ELBO`).

    Traced once per input shape; the trainer drops the last incomplete batch so there is one shape.
    """
    return JitTraceELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
        ignore_jit_warnings=True,
    )
