"""A plugin for tests (``--import tests.fixed_noise``): reparameterised Normal draws whose noise is a
fixed function of each example, not of the random stream.

Data-parallel processes draw from their own random streams, so a DDP step cannot be compared with
one process's step on the union of the batches draw for draw. With this plugin imported, each draw
``loc + scale * eps`` takes ``eps`` as a fixed smooth function of ``loc`` (itself a function of the
example and the parameters), so both runs draw the same noise for the same example.

With ``$PYRO_VAE_TEST_GRADS`` set to a folder, the gradients of the first optimiser step are saved
there as ``grads-<LOCAL_RANK>.pt`` (by parameter name, without the model object's prefix): Adam is
nearly invariant to the scale of the gradient, so the parameters alone would not show a gradient
averaged where it should be summed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyro
import torch
from pyro.distributions import Normal

from pyro_vae.optim import JointOptim


def _noise(loc: torch.Tensor) -> torch.Tensor:
    # smooth in loc: the two runs compute loc in batches of other sizes, so it may differ in the last
    # bit, which must not change the draw by more than a last bit (a hash of loc would)
    return torch.sin(7.0 * loc.detach() + 1.0) * 1.2


def _rsample(self: Normal, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
    shape = self._extended_shape(sample_shape)
    loc, scale = self.loc.expand(shape), self.scale.expand(shape)
    return loc + scale * _noise(loc)


Normal.rsample = _rsample  # type: ignore[method-assign]


# the original step, also when this module is reloaded (the class then holds our _call already)
_step = getattr(JointOptim.__call__, "original", JointOptim.__call__)
_saved = False


def _call(self: JointOptim, params: object, *args: object, **kwargs: object) -> object:
    global _saved
    folder = os.environ.get("PYRO_VAE_TEST_GRADS")
    if folder and not _saved:
        store = pyro.get_param_store()
        grads = {
            store.param_name(p).split("$$$", 1)[-1]: p.grad.detach().clone()
            for p in params  # type: ignore[attr-defined]
            if p.grad is not None
        }
        torch.save(grads, Path(folder) / f"grads-{os.environ.get('LOCAL_RANK', '0')}.pt")
        _saved = True
    return _step(self, params, *args, **kwargs)


_call.original = _step  # type: ignore[attr-defined]
JointOptim.__call__ = _call  # type: ignore[method-assign]
