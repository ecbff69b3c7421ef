"""Training plans: what one epoch of training is, for one model.

:func:`pyro_vae.train.train` runs a plan and does nothing model-specific itself. A plan is built by
:meth:`pyro_vae.models.Model.training_plan` and implements :class:`TrainingPlan`; the default one,
:class:`UnsupervisedPlan`, takes one SVI step on every shuffled batch of the training set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from pyro.infer import ELBO, SVI

from .data import batches
from .errors import ConfigError
from .objectives.kl import KLWeighted

if TYPE_CHECKING:
    from pyro.optim import PyroOptim

    from .config import RunConfig
    from .data import Dataset


@runtime_checkable
class TrainingPlan(Protocol):
    """The contract between the trainer and a model's schedule of steps.

    - ``steps_per_epoch``: for the progress bar;
    - ``begin_epoch(epoch)``: before each epoch (0-based), e.g. to move a KL warm-up on;
    - ``epoch(x)``: the epoch's steps, yielding ``(loss, data points)`` after each one, where ``x`` is
      the epoch's training set (redrawn under dynamic binarization);
    - ``end_epoch(data)``: extra metrics for the epoch's record (e.g. validation accuracy);
    - ``state_dict()`` / ``load_state_dict()``: what a resumed run needs beyond the model and
      optimiser, saved in the checkpoint (tensors, numbers and strings only); a state with a
      ``"selected_model"`` entry names the weights the run keeps (M2's best validation epoch),
      otherwise the run keeps the last epoch's;
    - ``finish()``: after the last epoch.
    """

    steps_per_epoch: int

    def begin_epoch(self, epoch: int) -> None: ...

    def epoch(self, x: torch.Tensor) -> Iterator[tuple[float, int]]: ...

    def end_epoch(self, data: Dataset) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def finish(self) -> None: ...


def schedule(objective: ELBO, epoch: int) -> None:
    """Move an objective's schedule (KL annealing) to ``epoch``."""
    if isinstance(objective, KLWeighted):
        objective.set_epoch(epoch)


class Plan:
    """Defaults for a :class:`TrainingPlan`: no state, no extra metrics, the last epoch's weights."""

    steps_per_epoch: int = 0
    objective: ELBO | None = None

    def begin_epoch(self, epoch: int) -> None:
        if self.objective is not None:
            schedule(self.objective, epoch)

    def epoch(self, x: torch.Tensor) -> Iterator[tuple[float, int]]:
        raise NotImplementedError

    def end_epoch(self, data: Dataset) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


def make_svi(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    optim: PyroOptim,
    objective: ELBO,
    config: RunConfig,
) -> SVI:
    """The step every plan takes: Pyro's :class:`~pyro.infer.SVI`, or with ``--fast`` the same
    step through :class:`~pyro_vae.fast.FastSVI` (the loss captured once per input signature and
    replayed or compiled; the same parameter updates, tests/test_fast.py)."""
    from .config import FAST_MODES

    mode = config.train.fast
    if mode == "off":
        return SVI(model, guide, optim, objective)
    from .fast import FastSVI

    return FastSVI(model, guide, optim, objective, compile=FAST_MODES[mode])  # type: ignore[return-value]


def is_jit(objective: ELBO) -> bool:
    """Whether ``objective`` (or the objective it weights) is compiled, so needs one batch shape."""
    inner = objective.inner if isinstance(objective, KLWeighted) else objective
    return type(inner).__name__.startswith("Jit")


class UnsupervisedPlan(Plan):
    """Every training image once per epoch in shuffled batches, one SVI step on each.

    A JIT-compiled objective is traced once per input shape, so it drops the last incomplete batch.
    """

    def __init__(
        self,
        model: Any,
        data: Dataset,
        config: RunConfig,
        optim: PyroOptim,
        objective: ELBO,
    ) -> None:
        self.objective = objective
        self.svi = make_svi(model.model, model.guide, optim, objective, config)
        self.batch_size = b = config.train.batch_size
        self.n = n = data.train.shape[0]
        self.device = data.device
        self.steps_per_epoch = n // b if is_jit(objective) else math.ceil(n / b)
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"--batch-size {b} is larger than the {n} training points; use a smaller one"
            )

    def epoch(self, x: torch.Tensor) -> Iterator[tuple[float, int]]:
        for idx in islice(batches(self.n, self.batch_size, self.device), self.steps_per_epoch):
            yield self.svi.step(x[idx]), idx.shape[0]
