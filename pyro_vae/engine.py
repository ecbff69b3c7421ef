"""Where training runs: one process on one device, or data-parallel through Lightning Fabric.

pyro-vae has no distributed runtime of its own. ``--devices N`` (and ``--num-nodes``, ``--strategy``,
``--precision``) configure a :class:`lightning.fabric.Fabric`: one process per device, launched by
Fabric (or by ``torchrun`` or SLURM, which Fabric detects), the model wrapped in PyTorch's
``DistributedDataParallel``, gradients averaged by DDP during the backward pass. Pyro's parts are
used as they are: the objective's ``differentiable_loss`` gives the loss, Pyro's optimiser steps
the parameters, so checkpoints are the same whatever the number of processes.

Why the step is the same as one process on the union of the processes' batches: a pyro-vae loss is
the sum over its batch (the plate ``data`` is not subsampled), DDP averages gradients over the
``W`` processes, so each process backpropagates ``W`` times its loss and the average is the gradient
of the sum over all batches (tests/test_distributed.py).

With one process no Fabric is made at all: the step is Pyro's :class:`~pyro.infer.SVI`, exactly as
before scale-out existed. ``--precision bf16-mixed`` autocasts the encoder and decoder networks
alone (:func:`pyro_vae.nn.network_precision`), not the whole loss as a Fabric precision plugin would:
their outputs come back in float32, so distributions, log-densities and the bounds' log-sum-exp over
particles are computed in float32.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.util import zero_grads
from torch import nn

from .errors import ConfigError

if TYPE_CHECKING:
    from pyro.infer import ELBO
    from pyro.optim import PyroOptim

    from .config import TrainConfig

#: --strategy: what Fabric runs; pyro-vae steps each parameter with Pyro's optimiser, so strategies
#: that shard parameters (fsdp, deepspeed) cannot apply
STRATEGIES = ("auto", "ddp")
#: --fast: Pyro's SVI, or pyro_vae.fast.FastSVI replaying / compiling the captured loss
FAST_MODES = {
    "off": None,
    "eager": None,
    "compile": "default",
    "reduce-overhead": "reduce-overhead",
}
#: --precision: 16-mixed needs a gradient scaler inside the optimiser step, which Pyro's
#: per-parameter optimisers do not take; bf16 has float32's range and needs none
PRECISIONS = ("32-true", "bf16-mixed")


def check_engine_options(t: TrainConfig) -> None:
    """Refuse run and scale-out options no run can use (without looking at the hardware)."""
    for name, value in (
        ("--epochs", t.epochs),
        ("--batch-size", t.batch_size),
        ("--eval-particles", t.eval_particles),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    # sizes past these are typos (2**40 for 240), not experiments: refuse them before they become
    # an allocation of terabytes
    for name, value, cap in (
        ("--eval-particles", t.eval_particles, 10**5),
        ("--batch-size", t.batch_size, 2**31),
        ("--epochs", t.epochs, 10**7),
    ):
        if value > cap:
            raise ConfigError(f"{name} {value} is larger than pyro-vae allows ({cap})")
    if not 0 <= t.seed < 2**32:
        raise ConfigError(f"--seed must lie in 0..{2**32 - 1}, got {t.seed}")
    if not t.lr > 0:
        raise ConfigError(f"--lr must be positive, got {t.lr!r}")
    if t.fast not in FAST_MODES:
        raise ConfigError(f"unknown --fast {t.fast!r}: choose one of {', '.join(FAST_MODES)}")
    for name, value in (("--devices", t.devices), ("--num-nodes", t.num_nodes)):
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if value > 4096:
            raise ConfigError(f"{name} {value} is larger than pyro-vae allows (4096)")
    if t.strategy not in STRATEGIES:
        why = (
            f"; {t.strategy} shards the parameters, which Pyro's per-parameter optimisers cannot "
            "step"
            if t.strategy.startswith(("fsdp", "deepspeed"))
            else ""
        )
        raise ConfigError(
            f"unknown --strategy {t.strategy!r}: choose one of {', '.join(STRATEGIES)}{why}"
        )
    if t.precision not in PRECISIONS:
        why = (
            "; 16-mixed needs a gradient scaler in the optimiser step, which Pyro's optimisers do "
            "not take: use bf16-mixed (float32's range, no scaler)"
            if t.precision in ("16-mixed", "16")
            else ""
        )
        raise ConfigError(
            f"unknown --precision {t.precision!r}: choose one of {', '.join(PRECISIONS)}{why}"
        )
    if t.devices * t.num_nodes > 1 and t.fast != "off":
        raise ConfigError(
            f"--fast {t.fast} captures Pyro's single-process SVI step; with --devices or "
            "--num-nodes the step runs through Lightning Fabric: drop --fast"
        )
    if t.strategy != "auto" and t.devices * t.num_nodes == 1:
        raise ConfigError(
            f"--strategy {t.strategy} runs several processes; pass --devices N (N > 1), or drop it"
        )


def derived_seed(seed: int, rank: int) -> int:
    """The global seed of process ``rank``: the run's seed on rank 0, an independent stream on the
    others (so that their Monte Carlo noise is not the same as rank 0's)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class _Losses(nn.Module):
    """The module DDP wraps: the model, and a forward that computes the loss a closure gives.

    DDP needs the loss to come out of its own ``forward`` (to find the parameters a step did not
    use, e.g. M2's classifier-only step); every Pyro loss of a step is computed through here.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        return loss()


@dataclass
class Engine:
    """The processes of a run: ``rank`` of ``world``, and the Fabric that connects them (None for a
    single process in float32)."""

    device: torch.device
    fabric: Any = None
    rank: int = 0
    world: int = 1
    #: the networks' compute dtype under --precision bf16-mixed (None: float32)
    dtype: torch.dtype | None = None
    module: Any = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def launch(self) -> None:
        """Start the other processes (Fabric re-runs this command in each, or finds them started by
        torchrun / SLURM) and join the process group."""
        if self.fabric is None:
            return
        self.fabric.launch()
        self.rank, self.world = self.fabric.global_rank, self.fabric.world_size
        self.device = self.fabric.device
        _destroy_at_exit()

    def attach(self, model: nn.Module) -> None:
        """Wrap ``model`` (all its parameters made) for the steps: in DDP for several processes."""
        if self.fabric is not None:
            self.module = self.fabric.setup_module(_Losses(model))

    def mean(self, value: torch.Tensor) -> float:
        """``value`` averaged over the processes, as a float (the same on every process)."""
        value = value.detach()
        if self.distributed:
            import torch.distributed as dist

            value = value.to(self.device, copy=True)
            self._collective(dist.all_reduce, value)
            value = value / self.world
        return float(value)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on any process."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([float(flag)], device=self.device)
        self._collective(dist.all_reduce, t)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (a picklable value) on every process."""
        if not self.distributed:
            return obj
        import pickle

        import torch.distributed as dist

        data = pickle.dumps(obj) if self.is_main else b""
        size = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        self._collective(dist.broadcast, size, src=0)
        if self.is_main:
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(self.device)
        else:
            payload = torch.empty(int(size.item()), dtype=torch.uint8, device=self.device)
        self._collective(dist.broadcast, payload, src=0)
        # rank 0's own object, unchanged; the others unpickle what this same program sent
        return obj if self.is_main else pickle.loads(payload.cpu().numpy().tobytes())

    def gather(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every process's ``state`` (tensors of the same shapes on each), in rank order."""
        if not self.distributed:
            return [state]
        import torch.distributed as dist

        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.world)]
        for key, value in sorted(state.items()):
            parts = [torch.empty_like(value, device=self.device) for _ in range(self.world)]
            self._collective(dist.all_gather, parts, value.to(self.device, copy=True))
            for r, part in enumerate(parts):
                out[r][key] = part.cpu()
        return out

    def _collective(self, op: Callable[..., Any], *tensors: Any, **kwargs: Any) -> None:
        """``op(*tensors, **kwargs)`` (a ``torch.distributed`` collective), and back only once the
        process group's worker threads have let go of the tensors.

        Why: gloo runs a collective on a worker thread, which drops its own references to the
        tensors a moment *after* ``wait()`` has returned here. A tensor that Python has dropped
        by then is freed on that thread, which must take the GIL to free its Python object; at
        interpreter exit Python ends a thread that asks for the GIL (``pthread_exit``) and the
        unwinding through gloo's loop aborts the whole process ("terminate called without an
        active exception"). Holding the tensors here until the workers have released them keeps
        every such free on this thread, whatever the timing (tests/test_engine.py).
        """
        import torch.distributed as dist

        # NCCL's watchdog keeps a work's tensors a while; a torch without the use count (a
        # private method) runs the collective unheld, as PyTorch itself does
        if dist.get_backend() != "gloo" or not _CAN_COUNT:
            op(*tensors, **kwargs)
            return
        flat = [t for x in tensors for t in (x if isinstance(x, list) else [x])]
        counts = [t._use_count() for t in flat]
        op(*tensors, **kwargs)
        _released(flat, counts)

    def close(self, *, clean: bool = True) -> None:
        """The end of this process's part in the run; every process calls it.

        ``clean`` (the run ended normally on every process): a barrier first, so that no process
        leaves while another still needs it (rank 0 hosts the rendezvous store under Fabric's
        launcher). After a failure the others may be anywhere, so no collective is attempted.
        Then the DDP wrapper is dropped. The process group stays for a further run in this
        process (Fabric joins it once per process); :func:`_destroy_at_exit` destroys it.
        """
        if self.fabric is None:
            return
        import torch.distributed as dist

        if clean and self.distributed and dist.is_initialized():
            self.fabric.barrier()
        self.module = None

    def stop_others(self, grace: float = 5.0) -> None:
        """After a failure on the launching process: end the processes it started. Those that
        stopped on the same error (a non-finite loss stops every process) exit by themselves within
        ``grace`` seconds, having reported it; those waiting in a collective for this process would
        wait until it times out, and are killed."""
        launcher = getattr(getattr(self.fabric, "_strategy", None), "launcher", None)
        deadline = time.monotonic() + grace
        for proc in getattr(launcher, "procs", []):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.kill()


def _released(tensors: list[torch.Tensor], counts: list[int], timeout: float = 10.0) -> None:
    """Wait (the GIL released) until ``tensors`` are referred to by no more holders than before the
    collective: the process group's worker threads have dropped them (see
    :meth:`Engine._collective`). They do within microseconds; should a later PyTorch keep them
    past ``timeout`` seconds, the engine stops waiting rather than slow every step."""
    if _HELD_ON:
        return
    deadline = time.monotonic() + timeout
    delay = 1e-5
    for t, before in zip(tensors, counts):
        while t._use_count() > before:
            if time.monotonic() > deadline:
                _HELD_ON.append(True)
                return
            time.sleep(delay)
            delay = min(delay * 2, 1e-3)


#: set once a collective's tensors stayed held past the timeout: waiting is given up
_HELD_ON: list[bool] = []
#: whether this torch counts a tensor's holders (``Tensor._use_count``, private)
_CAN_COUNT = hasattr(torch.Tensor, "_use_count")


_EXIT_HOOK: list[bool] = []


def _destroy_at_exit() -> None:
    """Destroy the default process group when this process exits (once; PyTorch asks every
    process to call ``destroy_process_group`` before it ends; Fabric does it for NCCL alone)."""
    if _EXIT_HOOK:
        return
    import atexit

    def destroy() -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    atexit.register(destroy)
    _EXIT_HOOK.append(True)


_CURRENT: ContextVar[Engine | None] = ContextVar("pyro_vae_engine", default=None)


def current() -> Engine | None:
    """The engine of the run in progress (None outside :func:`~pyro_vae.train.train`)."""
    return _CURRENT.get()


@contextlib.contextmanager
def running(engine: Engine) -> Iterator[Engine]:
    """Make ``engine`` the one :func:`~pyro_vae.plan.make_svi` builds steps for."""
    token = _CURRENT.set(engine)
    try:
        yield engine
    finally:
        _CURRENT.reset(token)


def engine_for(t: TrainConfig, device: torch.device, *, partial_steps: bool = True) -> Engine:
    """The engine ``--devices``, ``--num-nodes``, ``--strategy`` and ``--precision`` ask for, on
    ``device`` (resolved by :func:`~pyro_vae.train.resolve_device`); checked against the hardware.

    ``partial_steps``: some steps of the model's plan leave parameters unused (M2's classifier
    step), which DDP must look for after every forward pass (:attr:`pyro_vae.Model.partial_steps`).
    The options themselves are checked by :func:`pyro_vae.build.validate` (:func:`check_engine_options`).
    """
    world = t.devices * t.num_nodes
    dtype = torch.bfloat16 if t.precision == "bf16-mixed" else None
    if t.precision == "bf16-mixed" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "--precision bf16-mixed: this GPU has no bfloat16 support; use --precision 32-true"
        )
    launched = os.environ.get("WORLD_SIZE", "1")
    if launched.isdigit() and int(launched) != world and "TORCHELASTIC_RUN_ID" in os.environ:
        raise ConfigError(
            f"torchrun started {launched} processes, but --devices {t.devices} --num-nodes "
            f"{t.num_nodes} make {world}; pass --devices (per machine) and --num-nodes to match"
        )
    if world == 1:
        return Engine(device, dtype=dtype)
    if t.devices > 1 and device.index is not None:
        raise ConfigError(
            f"--device {device} names one GPU but --devices {t.devices} asks for several; pass "
            "--device cuda (and CUDA_VISIBLE_DEVICES to choose them)"
        )
    if device.type == "cuda":
        have = torch.cuda.device_count()
        if t.devices > have:
            raise ConfigError(
                f"--devices {t.devices}: this machine has {have} GPU(s); pass --devices {have} or "
                "fewer"
            )
        devices: Any = [device.index] if device.index is not None else t.devices
    else:
        have = os.cpu_count() or 1
        if t.devices > have:
            raise ConfigError(
                f"--devices {t.devices} on CPU starts one process per device, but this machine has "
                f"{have} CPU core(s); pass --devices {have} or fewer"
            )
        devices = t.devices
    if t.num_nodes > 1 and not _cluster_launched():
        raise ConfigError(
            f"--num-nodes {t.num_nodes}: start the same command on every machine with MASTER_ADDR, "
            "MASTER_PORT and NODE_RANK set, or launch it with torchrun or SLURM (srun)"
        )
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    try:
        fabric = Fabric(
            accelerator=device.type,
            devices=devices,
            num_nodes=t.num_nodes,
            strategy=DDPStrategy(find_unused_parameters=partial_steps),
        )
    except (ValueError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"Lightning Fabric cannot run this configuration: {first}") from None
    return Engine(device, fabric, fabric.global_rank, fabric.world_size, dtype)


def _cluster_launched() -> bool:
    return any(k in os.environ for k in ("MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"))


class FabricSVI:
    """Pyro's SVI step through a Fabric :class:`Engine`: the objective's differentiable loss from
    DDP's forward, ``fabric.backward`` of ``world`` times it,
    Pyro's optimiser on the parameters the step touched. Returns the loss averaged over the
    processes, the same number on each."""

    def __init__(
        self,
        model: Callable[..., Any],
        guide: Callable[..., Any],
        optim: PyroOptim,
        objective: ELBO,
        engine: Engine,
    ) -> None:
        self.model, self.guide, self.optim, self.objective = model, guide, optim, objective
        self.engine = engine
        self._checked = False

    def step(self, *args: Any, **kwargs: Any) -> float:
        engine = self.engine
        if engine.module is None:
            raise RuntimeError("Engine.attach(model) must run before the first step")
        with poutine.trace(param_only=True) as capture:
            loss = engine.module(
                lambda: self.objective.differentiable_loss(self.model, self.guide, *args, **kwargs)
            )
        params = {site["value"].unconstrained() for site in capture.trace.nodes.values()}
        if not self._checked:
            self._check_params(capture.trace)
        engine.fabric.backward(loss * engine.world)
        self.optim(params)
        zero_grads(params)
        return engine.mean(loss)

    def _check_params(self, trace: Any) -> None:
        """Every parameter must belong to the model module that DDP averages the gradients of."""
        owned = {id(p) for p in self.engine.module.parameters()}
        stray = [
            name
            for name, site in trace.nodes.items()
            if id(site["value"].unconstrained()) not in owned
        ]
        if stray:
            raise ConfigError(
                f"the parameter(s) {', '.join(sorted(stray)[:3])} are made by pyro.param outside "
                "the model's nn.Module, so data-parallel training could not average their "
                "gradients; make them nn.Parameters of the model (or a PyroModule in it)"
            )
        self._checked = True


def set_rank_seed(seed: int, engine: Engine) -> None:
    """Give each process its own global random stream (rank 0 keeps the run's seed)."""
    if engine.rank:
        pyro.set_rng_seed(derived_seed(seed, engine.rank))
