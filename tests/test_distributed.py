"""Data-parallel training through Lightning Fabric, with 2 CPU processes (gloo), through the CLI.

Each DDP run here starts ``python -m pyro_vae train --devices 2``, which Fabric re-runs once more as
rank 1. One process on the union of the two ranks' batches is the reference: with the run's data
order (the same in every process) and batch size ``2B`` against ``B`` per rank, its batches are
exactly the unions, and ``tests.fixed_noise`` makes every Monte Carlo draw a fixed function of its
example, so both runs draw the same noise and must reach the same parameters (to float tolerance:
the gradients are summed in another order).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pyro.distributions import Normal

from pyro_vae import evaluate, load_run, train
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import train_config
from pyro_vae.optim import JointOptim

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 training and 64 test digits with labels: an even number of rows per split, so that no
    rank pads its share."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    path = tmp_path_factory.mktemp("ddp") / "digits.npz"
    np.savez(path, x_train=x[:256], x_test=x[256:320], y_train=y[:256], y_test=y[256:320])
    return path


def ddp(
    *args: str, cwd: Path, returncode: int = 0, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``pyro-vae train --devices 2 --device cpu ARGS`` in fresh processes."""
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARIABLES} | extra_env
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "pyro_vae", "train", "--devices", "2", "--device", "cpu"]
    out = subprocess.run(
        [*cmd, "--no-progress", "--no-plots", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == returncode, out.stdout[-3000:] + out.stderr[-3000:]
    _no_abort(out)
    return out


def _no_abort(out: subprocess.CompletedProcess[str]) -> None:
    """No process of the run aborted, rank 1 included: its stderr is the launching process's,
    but its exit status is not (it may abort after rank 0 has exited with 0)."""
    for sign in ("terminate called", "Fatal Python error", "SIGABRT"):
        assert sign not in out.stderr, out.stderr[-3000:]


_RANK_VARIABLES = {"LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"}


@pytest.fixture
def fixed_noise() -> object:
    """tests.fixed_noise installed in this process for one test, then the real sampler back."""
    original = Normal.rsample, JointOptim.__call__
    import tests.fixed_noise as module

    importlib.reload(module)
    yield module
    Normal.rsample, JointOptim.__call__ = original  # type: ignore[method-assign]


def _state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run)["model"]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


COMMON = ["--hidden", "32", "--latent-dim", "4", "--epochs", "2", "--seed", "3"]


@pytest.mark.parametrize(
    "model_args",
    [[], ["--model", "m2", "--labels", "20", "--val-size", "20"]],
    ids=["vae", "m2"],
)
def test_ddp_step_equals_one_process_on_the_union(
    data: Path,
    tmp_path: Path,
    fixed_noise: object,
    model_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["--dataset", str(data), *COMMON, *model_args]
    for name in ("ddp", "one"):
        (tmp_path / f"grads-{name}").mkdir()
    ddp(
        *args,
        "--batch-size",
        "16",
        "--import",
        "tests.fixed_noise",
        "--run-dir",
        "ddp",
        cwd=tmp_path,
        PYRO_VAE_TEST_GRADS=str(tmp_path / "grads-ddp"),
    )
    config = train_config([*args, "--batch-size", "32", "--device", "cpu"])
    monkeypatch.setenv("PYRO_VAE_TEST_GRADS", str(tmp_path / "grads-one"))
    train(config, tmp_path / "one", progress=False)

    # the first step's gradients: each rank holds the gradient of the sum over both batches
    one = torch.load(tmp_path / "grads-one" / "grads-0.pt")
    for rank in (0, 1):
        two = torch.load(tmp_path / "grads-ddp" / f"grads-{rank}.pt")
        assert two.keys() == one.keys() and one
        for name in one:
            torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)

    two, one = _state(tmp_path / "ddp"), _state(tmp_path / "one")
    assert two.keys() == one.keys()
    moved = 0
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
        moved += int(not torch.equal(one[name], _initial(config)[name]))
    assert moved > 0  # training changed the parameters: the comparison is not of two initial states
    for a, b in zip(_metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")):
        assert a["train_elbo"] == pytest.approx(b["train_elbo"], rel=1e-5)


def _initial(config: object) -> dict[str, torch.Tensor]:
    import pyro

    from pyro_vae.data import load_dataset
    from pyro_vae.models import build_model

    pyro.set_rng_seed(config.train.seed)  # type: ignore[attr-defined]
    ds = load_dataset(config.data)  # type: ignore[attr-defined]
    return build_model(config.model, ds.x_shape, ds.num_classes).state_dict()  # type: ignore[attr-defined]


def test_ddp_resume_equals_uninterrupted_and_reloads_in_one_process(
    data: Path, tmp_path: Path
) -> None:
    args = ["--dataset", str(data), *COMMON[:-4], "--batch-size", "16", "--seed", "5"]
    ddp(*args, "--epochs", "2", "--run-dir", "whole", cwd=tmp_path)
    ddp(*args, "--epochs", "1", "--run-dir", "parts", cwd=tmp_path)
    ddp(*args, "--epochs", "2", "--run-dir", "parts", "--resume", cwd=tmp_path)
    whole, parts = _state(tmp_path / "whole"), _state(tmp_path / "parts")
    for name in whole:
        assert torch.equal(whole[name], parts[name]), name
    assert _metrics(tmp_path / "whole") == [
        {**r, "epoch_time": w["epoch_time"]}
        for r, w in zip(_metrics(tmp_path / "parts"), _metrics(tmp_path / "whole"))
    ]
    # both ranks' random states are saved, so each continues its own stream
    rng = load_checkpoint(tmp_path / "whole")["rng"]
    assert len(rng["ranks"]) == 2 and not torch.equal(
        rng["ranks"][0]["cpu"], rng["ranks"][1]["cpu"]
    )

    config, model, ds = load_run(tmp_path / "whole")  # a 2-process run, reloaded in this one
    assert config.train.devices == 2
    assert np.isfinite(evaluate.elbo(model, ds.test))


def test_a_nan_on_one_process_stops_every_process_and_keeps_the_last_checkpoint(
    data: Path, tmp_path: Path
) -> None:
    args = ["--dataset", str(data), *COMMON[:-4], "--batch-size", "16", "--epochs", "3"]
    # 256 images, 2 processes of 16: 8 steps an epoch; rank 1's 11th loss is in epoch 2
    out = ddp(
        *args,
        "--import",
        "tests.nan_loss",
        "--run-dir",
        "run",
        cwd=tmp_path,
        returncode=2,
        PYRO_VAE_TEST_NAN_STEP="11",
    )
    for who in ("pyro-vae", "pyro-vae (rank 1)"):  # both processes stop at the same step
        assert f"{who}: error: the loss became nan at epoch 2, step 3" in out.stderr
    assert "the last good checkpoint (epoch 1) is kept" in out.stderr
    assert load_checkpoint(tmp_path / "run")["epoch"] == 1
    assert len(_metrics(tmp_path / "run")) == 1


def test_every_model_and_objective_trains_data_parallel(data: Path, tmp_path: Path) -> None:
    from tests.ddp_matrix import CONFIGURATIONS

    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    out = tmp_path / "records.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_matrix.py"), str(data), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _no_abort(run)
    records = json.loads(out.read_text())
    assert set(records) == set(CONFIGURATIONS)
    assert all(r["test_elbo"] < 0 for r in records.values())


def test_torchrun_launches_a_run_as_fabric_documents(data: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _RANK_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["-m", "pyro_vae", "train", "--dataset", str(data), "--devices", "2"]
    cmd += ["--device", "cpu", *COMMON[:-4], "--epochs", "1", "--run-dir", "run", "--no-plots"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    _no_abort(run)
    assert run.stdout.count("run written to run") == 1  # rank 0 reports, rank 1 does not
    assert len(load_checkpoint(tmp_path / "run")["rng"]["ranks"]) == 2
