"""Training objectives: Pyro ``ELBO`` instances built by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pyro.infer import ELBO

from ..registry import Registry

#: name -> ``factory(num_particles, **options) -> pyro.infer.ELBO``. Every objective works on the
#: traces of any model/guide pair whose data plate is the outermost plate (``max_plate_nesting=1``
#: leaves dim -2 free for vectorised particles).
OBJECTIVES: Registry[ELBO] = Registry("objective", base=ELBO, supplied=("num_particles",))


@runtime_checkable
class NeedsDataSize(Protocol):
    """An objective that needs the number of data points N of the training set (beta-TCVAE's
    estimate of q(z)); the training plan calls :meth:`set_data_size` before the first step."""

    def set_data_size(self, n: int) -> None: ...


@runtime_checkable
class AuxiliaryStep(Protocol):
    """An objective that trains a part of its own between the model's steps (FactorVAE's
    discriminator): the training plan calls :meth:`auxiliary_step` after every SVI step, on the
    same batch, and saves :meth:`state_dict` in the checkpoint."""

    def auxiliary_step(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
