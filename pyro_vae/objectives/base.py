"""Training objectives: Pyro ``ELBO`` instances built by name, and what they declare to the trainer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pyro.infer import ELBO

from ..registry import Registry


class Objective:
    """What an objective declares to the trainer, beside Pyro's ``ELBO`` interface: mixed into an
    ``ELBO`` subclass that needs more than plain steps. An ``ELBO`` without it needs nothing.

    - :attr:`compiled`: traced once per input shape (TorchScript), so a plan must feed it batches of
      one shape and a captured step (``--fast``) must trace the eager objective instead;
    - :meth:`set_epoch`: the objective changes with the epoch (KL annealing); plans call it at the
      start of every epoch;
    - :meth:`eager`: the same objective without its compilation;
    - :meth:`capture_key`: what, beyond the inputs, a captured loss depends on (a KL weight).
    """

    compiled: bool = False

    def set_epoch(self, epoch: int) -> None:
        """Move the objective's schedule to ``epoch``; by default it has none."""

    def eager(self) -> ELBO:
        """This objective, uncompiled; by default itself."""
        return self  # type: ignore[return-value]

    def capture_key(self) -> Any:
        """A value that changes whenever a captured loss of this objective must be captured again."""
        return None

    def unwrapped(self) -> ELBO:
        """The objective this one wraps (KL weighting wraps any objective); by default itself."""
        return self  # type: ignore[return-value]


def set_epoch(objective: ELBO, epoch: int) -> None:
    """Move ``objective``'s schedule (KL annealing) to ``epoch``, where it has one."""
    if isinstance(objective, Objective):
        objective.set_epoch(epoch)


def is_compiled(objective: ELBO) -> bool:
    """Whether ``objective`` is traced once per input shape, so needs one batch shape."""
    return isinstance(objective, Objective) and objective.compiled


def eager(objective: ELBO) -> ELBO:
    """``objective`` without its compilation (itself where it has none)."""
    return objective.eager() if isinstance(objective, Objective) else objective


def unwrapped(objective: ELBO) -> ELBO:
    """The objective that ``objective`` wraps, or itself: where a plan looks for what an objective
    needs (:class:`NeedsDataSize`, :class:`AuxiliaryStep`)."""
    return objective.unwrapped() if isinstance(objective, Objective) else objective


def capture_key(objective: ELBO) -> Any:
    """What a captured loss of ``objective`` depends on beyond its inputs (None: nothing)."""
    return objective.capture_key() if isinstance(objective, Objective) else None


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
