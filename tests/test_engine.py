"""The engine's parts that need no second process: data sharding, option checks, bf16 networks.

Runs of several processes are in tests/test_distributed.py.
"""

from __future__ import annotations

from pathlib import Path

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyro.infer import SVI

from pyro_vae import PyroVAEError
from pyro_vae.cli import train_config
from pyro_vae.config import ModelConfig, RunConfig, TrainConfig
from pyro_vae.data import load_dataset
from pyro_vae.engine import engine_for
from pyro_vae.models import build_model
from pyro_vae.nn import network_precision
from pyro_vae.objectives import build_objective
from pyro_vae.plan import Feed, make_svi, num_batches, shard
from pyro_vae.train import train


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    batch=st.integers(1, 40),
    world=st.integers(1, 5),
)
def test_shard_gives_every_rank_equal_batches_whose_unions_are_the_global_batches(
    n: int, batch: int, world: int
) -> None:
    order = torch.randperm(n)
    parts = [shard(order, batch, r, world) for r in range(world)]
    assert {len(p) for p in parts} == {num_batches(n, batch, world)}
    padded = torch.cat([order] * (world + 1))[: -(-n // world) * world]
    for i, chunk in enumerate(padded.split(batch * world)):
        ranks = [p[i] for p in parts]
        assert len({r.numel() for r in ranks}) == 1  # the same batch size on every process
        assert torch.equal(torch.cat(ranks), chunk)  # rank order: the union is the global batch
    if world == 1:
        assert all(torch.equal(a, b) for a, b in zip(parts[0], order.split(batch)))


def test_ranks_see_disjoint_data_in_an_epoch_and_the_same_order_every_epoch_resumed() -> None:
    data = load_dataset(RunConfig().data)
    n = data.train.shape[0] - 1  # odd: rank 1 gets one repeated index
    feeds = [Feed(data, seed=7, rank=r, world=2) for r in range(2)]
    for _ in range(2):  # two epochs: a fresh shuffle each, still shared by the ranks
        seen = [torch.cat(f.shuffle(n, 32)).tolist() for f in feeds]
        assert len(seen[0]) == len(seen[1]) == -(-n // 2)
        assert set(seen[0]) | set(seen[1]) == set(range(n))
        assert len(set(seen[0]) & set(seen[1])) == 1  # only the padding index repeats
    # the order's state is part of the checkpoint: a restored feed continues the same shuffles
    a, b = Feed(data, seed=3), Feed(data, seed=3)
    a.shuffle(n, 10)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.shuffle(n, 10), b.shuffle(n, 10)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--devices", "0"], "--devices must be a positive integer"),
        (["--devices", "64", "--device", "cpu"], "one process per device, but this machine has"),
        (["--num-nodes", "2", "--devices", "1", "--device", "cpu"], "start the same command"),
        (["--strategy", "fsdp", "--devices", "2"], "shards the parameters"),
        (["--strategy", "dp"], "unknown --strategy 'dp'"),
        (["--strategy", "ddp"], "pass --devices N"),
        (["--precision", "16-mixed"], "gradient scaler"),
        (["--precision", "64"], "unknown --precision '64'"),
        (["--fast", "eager", "--devices", "2"], "drop --fast"),
    ],
)
def test_bad_scale_out_options_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(PyroVAEError, match=message) as info:
        config = train_config(["--epochs", "1", *argv])
        train(config, progress=False)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_devices_on_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(PyroVAEError, match="CUDA"):
        train(train_config(["--devices", "2", "--device", "cuda"]), progress=False)


def test_one_process_keeps_pyro_svi_unchanged() -> None:
    """Scale-out costs a one-device run nothing: no Fabric, Pyro's SVI as before."""
    config = RunConfig(train=TrainConfig(device="cpu"))
    engine = engine_for(config.train, torch.device("cpu"))
    assert engine.fabric is None and engine.dtype is None and not engine.distributed
    data = load_dataset(config.data)
    model = build_model(ModelConfig(hidden=(16,)), data.x_shape, data.num_classes)
    svi = make_svi(model.model, model.guide, pyro.optim.Adam({}), build_objective("elbo"), config)
    assert type(svi) is SVI


def test_bf16_mixed_autocasts_the_networks_and_keeps_the_bound_in_float32() -> None:
    data = load_dataset(RunConfig().data)
    model = build_model(ModelConfig(hidden=(32,), latent_dim=4), data.x_shape, data.num_classes)
    x = data.train[:64]
    inner: list[torch.dtype] = []
    model.encoder.net[0].register_forward_hook(lambda m, i, o: inner.append(o.dtype))
    objective = build_objective("iwae", num_particles=8)
    pyro.set_rng_seed(0)
    full = objective.differentiable_loss(model.model, model.guide, x)
    with network_precision(torch.bfloat16):
        pyro.set_rng_seed(0)
        trace = pyro.poutine.trace(model.guide).get_trace(x)
        pyro.set_rng_seed(0)
        mixed = objective.differentiable_loss(model.model, model.guide, x)
    assert inner[0] == torch.float32 and inner[-1] == torch.bfloat16  # the layer ran in bf16
    assert trace.nodes["z"]["value"].dtype == torch.float32  # q(z|x) and z stay float32
    assert mixed.dtype == torch.float32
    assert float(mixed) == pytest.approx(float(full), rel=2e-2)  # bf16's 8 bits of mantissa
    assert float(mixed) != float(full)  # autocast did act


def test_bf16_mixed_trains_and_evaluates_in_float32() -> None:
    config = train_config(["--epochs", "1", "--hidden", "16", "--precision", "bf16-mixed"])
    result = train(config, progress=False)
    assert result.history[0]["test_elbo"] < 0
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_a_process_count_other_than_torchrun_started_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    with pytest.raises(PyroVAEError, match="torchrun started 4 processes, but --devices 1"):
        engine_for(TrainConfig(device="cpu"), torch.device("cpu"))


def test_a_collective_returns_only_once_the_workers_let_go_of_its_tensors() -> None:
    """gloo drops its references to a collective's tensors on its worker thread a moment after
    the collective has returned. A tensor that Python has dropped by then is freed on that thread,
    which must take the GIL; at interpreter exit Python ends such a thread and the process aborts
    ("terminate called without an active exception"). The engine's collectives come back only
    once the workers have let go, so every tensor is freed on the caller's thread."""
    import torch.distributed as dist

    from pyro_vae.engine import Engine

    if dist.is_initialized():
        pytest.skip("a process group is already initialized in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        engine = Engine(torch.device("cpu"))
        held = 0
        for _ in range(300):
            t, parts = torch.ones(3), [torch.empty(3)]
            before = t._use_count(), parts[0]._use_count()
            engine._collective(dist.all_reduce, t)
            engine._collective(dist.all_gather, parts, t)
            held += (t._use_count(), parts[0]._use_count()) != before
        assert held == 0
    finally:
        dist.destroy_process_group()


def test_a_data_parallel_command_leaves_no_default_run_dir_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default run directory a data-parallel command shares with the processes it starts
    lives in the environment for that command only: a later command in the same Python process
    names its own."""
    import os

    from pyro_vae.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("PYRO_VAE_DEFAULT_RUN_DIR", "MASTER_ADDR", "SLURM_NTASKS", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    # refused inside train() (no cluster launched it), after the directory was named and before
    # any process started
    argv = ["train", "--num-nodes", "2", "--devices", "1", "--device", "cpu"]
    assert main(argv) == 2
    assert "PYRO_VAE_DEFAULT_RUN_DIR" not in os.environ
