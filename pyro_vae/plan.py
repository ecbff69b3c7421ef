"""Training plans: what one epoch of training is, for one model.

:func:`pyro_vae.train.train` runs a plan and does nothing model-specific itself. A plan is built by
:meth:`pyro_vae.models.Model.training_plan` and implements :class:`TrainingPlan`; the default one,
:class:`UnsupervisedPlan`, takes one SVI step on every shuffled batch of the training set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from pyro.infer import ELBO, SVI

from .errors import ConfigError
from .objectives.base import is_compiled, set_epoch, unwrapped

if TYPE_CHECKING:
    from pyro.optim import PyroOptim

    from .config import RunConfig
    from .data import Dataset


@runtime_checkable
class TrainingPlan(Protocol):
    """The contract between the trainer and a model's schedule of steps.

    - ``steps_per_epoch``: for the progress bar;
    - ``begin_epoch(epoch)``: before each epoch (0-based), e.g. to move a KL warm-up on;
    - ``epoch(feed)``: the epoch's steps, yielding ``(loss, data points)`` after each one; the plan
      shuffles its index sets with ``feed.shuffle`` (the run's data order, shared by every process of
      a data-parallel run, each process getting its own share of every batch) and reads the rows
      with ``feed(batches)``, and takes its steps through :func:`make_svi`, so that it runs on one
      device or data-parallel alike;
    - ``end_epoch(data)``: extra metrics for the epoch's record (e.g. validation accuracy);
    - ``state_dict()`` / ``load_state_dict()``: what a resumed run needs beyond the model and
      optimiser, saved in the checkpoint (tensors, numbers and strings only); a state with a
      ``"selected_model"`` entry names the weights the run keeps (M2's best validation epoch),
      otherwise the run keeps the last epoch's;
    - ``done()``: whether the plan wants no more epochs (early stopping); checked before every
      epoch, so a stopped run stays stopped when resumed;
    - ``finish()``: after the last epoch.
    """

    steps_per_epoch: int

    def begin_epoch(self, epoch: int) -> None: ...

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]: ...

    def end_epoch(self, data: Dataset) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def done(self) -> bool: ...

    def finish(self) -> None: ...


def shard(
    order: torch.Tensor, batch_size: int, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    """Process ``rank``'s batches of ``order``: global batches of ``batch_size * world`` indices, of
    which each of the ``world`` processes takes its own contiguous ``batch_size``.

    ``order`` is first padded to a multiple of ``world`` by repeating its head (as PyTorch's
    ``DistributedSampler`` does), so every process takes the same number of steps with batches of
    the same size, and the union of the processes' batches is one process's batch of the padded
    order. With ``world == 1`` this is ``order.split(batch_size)``.
    """
    if world > 1:
        n = order.numel()
        padded = -(-n // world) * world
        if padded != n:
            order = order.repeat(-(-padded // n))[:padded]
        out = []
        for chunk in order.split(batch_size * world):
            m = chunk.numel() // world
            out.append(chunk[rank * m : (rank + 1) * m])
        return out
    return list(order.split(batch_size))


def num_batches(n: int, batch_size: int, world: int = 1) -> int:
    """How many batches :func:`shard` makes of ``n`` indices."""
    per_process = -(-n // world)  # ceil: the order is padded to a multiple of world
    return -(-per_process // batch_size)


class Feed:
    """A run's training data as a plan's epoch reads them.

    The data order comes from the feed's own generator, seeded by ``--seed`` and saved in the
    checkpoint, so that it is the same in every process of a data-parallel run (whose global random
    state differs by rank, for independent noise) and continues exactly on ``--resume``.
    """

    def __init__(self, data: Dataset, seed: int, rank: int = 0, world: int = 1) -> None:
        self.data = data
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(seed)

    def shuffle(self, indices: torch.Tensor | int, batch_size: int) -> list[torch.Tensor]:
        """This process's batches of a fresh shuffle of ``indices`` (or of ``range(indices)``),
        on the data's device."""
        if isinstance(indices, int):
            indices = torch.arange(indices, device=self.data.device)
        perm = torch.randperm(indices.numel(), generator=self.generator).to(indices.device)
        return shard(indices[perm], batch_size, self.rank, self.world)

    def __call__(self, batches: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The training rows of each batch in turn, on the training device (streamed and
        prefetched when the data set streams; redrawn under dynamic binarization)."""
        return self.data.batches(batches)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def world_size(config: RunConfig) -> int:
    """Processes in the run: ``--devices`` on each of ``--num-nodes`` machines."""
    return config.train.devices * config.train.num_nodes


class Plan:
    """Defaults for a :class:`TrainingPlan`: no extra metrics, the last epoch's weights, and the
    objective's own state (a FactorVAE discriminator) as the plan's state.

    :meth:`step` is the step a plan takes on a batch: one SVI step of ``self.svi``, then the
    objective's own step where it has one (:class:`~pyro_vae.objectives.AuxiliaryStep`) on the same
    batch."""

    steps_per_epoch: int = 0
    objective: ELBO | None = None
    svi: Any = None
    model: Any = None

    def step(self, *args: Any) -> float:
        from .objectives import AuxiliaryStep

        loss = self.svi.step(*args)
        inner = unwrapped(self.objective) if self.objective is not None else None
        if isinstance(inner, AuxiliaryStep):
            inner.auxiliary_step(self.model.model, self.model.guide, *args)
        return loss

    def begin_epoch(self, epoch: int) -> None:
        if self.objective is not None:
            set_epoch(self.objective, epoch)  # the objective's own schedule (KL annealing)

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]:
        raise NotImplementedError

    def end_epoch(self, data: Dataset) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        from .objectives import AuxiliaryStep

        inner = unwrapped(self.objective) if self.objective is not None else None
        return {"objective": inner.state_dict()} if isinstance(inner, AuxiliaryStep) else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        from .objectives import AuxiliaryStep

        inner = unwrapped(self.objective) if self.objective is not None else None
        if isinstance(inner, AuxiliaryStep) and "objective" in state:
            inner.load_state_dict(state["objective"])

    def done(self) -> bool:
        return False

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
    replayed or compiled; the same parameter updates, tests/test_fast.py), or in a run on Lightning
    Fabric (``--devices``, ``--precision``) through :class:`~pyro_vae.engine.FabricSVI`."""
    from .engine import FAST_MODES, FabricSVI, current

    engine = current()
    if engine is not None and engine.fabric is not None:
        return FabricSVI(model, guide, optim, objective, engine)  # type: ignore[return-value]
    mode = config.train.fast
    if mode == "off":
        return SVI(model, guide, optim, objective)
    from .fast import FastSVI

    return FastSVI(model, guide, optim, objective, compile=FAST_MODES[mode])  # type: ignore[return-value]


def prepare(objective: ELBO, n: int, world: int) -> None:
    """Tell an objective what it needs to know of the training set before the first step: its
    size N (:class:`~pyro_vae.objectives.NeedsDataSize`); an objective that trains a part of its
    own (:class:`~pyro_vae.objectives.AuxiliaryStep`) runs in one process only."""
    from .objectives import AuxiliaryStep, NeedsDataSize

    inner = unwrapped(objective)
    if isinstance(inner, NeedsDataSize):
        inner.set_data_size(n)
    if isinstance(inner, AuxiliaryStep) and world > 1:
        raise ConfigError(
            "this objective trains a part of its own (a discriminator) that data-parallel "
            "training does not share between processes; train it with --devices 1"
        )


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
        self.model = model
        self.svi = make_svi(model.model, model.guide, optim, objective, config)
        self.batch_size = b = config.train.batch_size
        self.n = n = data.train.shape[0]
        world = world_size(config)
        prepare(objective, n, world)
        per_process = -(-n // world)
        self.steps_per_epoch = (
            per_process // b if is_compiled(objective) else num_batches(n, b, world)
        )
        if self.steps_per_epoch < 1:
            raise ConfigError(
                f"--batch-size {b} is larger than the {per_process} training points of each of the "
                f"{world} processes; use a smaller one"
                if world > 1
                else f"--batch-size {b} is larger than the {n} training points; use a smaller one"
            )

    def epoch(self, feed: Feed) -> Iterator[tuple[float, int]]:
        batches = feed.shuffle(self.n, self.batch_size)[: self.steps_per_epoch]
        for idx, x in zip(batches, feed(batches)):
            yield self.step(x), idx.shape[0]
