"""A plugin for tests (``--import tests.nan_loss``): the loss of one process becomes NaN.

With ``$PYRO_VAE_TEST_NAN_STEP=S`` the ``S``-th loss (1-based, counting every Trace_ELBO loss of
the process) of the process whose ``LOCAL_RANK`` is ``$PYRO_VAE_TEST_NAN_RANK`` (default 1) is NaN:
a data-parallel run must stop on every process at that step, keeping the last good checkpoint.
"""

from __future__ import annotations

import os

import torch
from pyro.infer import Trace_ELBO

_loss = getattr(Trace_ELBO.differentiable_loss, "original", Trace_ELBO.differentiable_loss)
_calls = 0


def _nan_loss(self: Trace_ELBO, *args: object, **kwargs: object) -> torch.Tensor:
    global _calls
    loss = _loss(self, *args, **kwargs)
    if os.environ.get("LOCAL_RANK", "0") == os.environ.get("PYRO_VAE_TEST_NAN_RANK", "1"):
        _calls += 1
        if _calls == int(os.environ.get("PYRO_VAE_TEST_NAN_STEP", "0")):
            return loss * float("nan")
    return loss


_nan_loss.original = _loss  # type: ignore[attr-defined]
Trace_ELBO.differentiable_loss = _nan_loss  # type: ignore[method-assign]
