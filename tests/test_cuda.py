"""CUDA: every model and objective trains on the GPU, runs move between devices, and the commands work
there. Marked ``cuda`` and skipped without a GPU (``pytest -m cuda`` on a machine that has one).

What each test means on a GPU: a step of every registered model with every objective it takes; a
checkpoint written on CUDA reloads on the CPU with the same weights; resuming on CUDA equals an
uninterrupted CUDA run bit for bit (a seed fixes the result on a given device); evaluate, scores,
encode and every figure run on CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from pyro_vae import MODELS, OBJECTIVES, ConfigError, build_model, load_run, train
from pyro_vae.cli import main
from pyro_vae.train import resolve_device

from .conftest import tiny_config
from .models.test_contract import config_for, tiny_data

CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")]


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _pairs() -> list[tuple[str, str]]:
    return [
        (m, o)
        for m in MODELS.names()
        for o in OBJECTIVES.names()
        if MODELS.get(m).objectives is None or o in MODELS.get(m).objectives
    ]


@pytest.mark.parametrize(("model", "objective"), _pairs())
def test_every_model_and_objective_trains_on_cuda(model, objective) -> None:
    config = config_for(model, "diagonal", "normal", objective)
    config = config.replace(train={"device": "cuda", "epochs": 1})
    data = tiny_data()
    built = build_model(config.model, data.x_shape, data.num_classes)
    result = train(config, progress=False, dataset=data, model=built)
    assert next(result.model.parameters()).is_cuda and result.dataset.train.is_cuda
    assert all(math.isfinite(r["train_elbo"]) for r in result.history)


def test_a_cuda_checkpoint_reloads_on_the_cpu(tmp_path) -> None:
    result = train(tiny_config(device="cuda"), tmp_path / "run", progress=False)
    _, model, data = load_run(tmp_path / "run", device="cpu")
    assert not next(model.parameters()).is_cuda and not data.test.is_cuda
    a, b = _params(result.model), _params(model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_cuda_equals_an_uninterrupted_cuda_run(tmp_path) -> None:
    full = train(tiny_config(epochs=4, device="cuda"), tmp_path / "full", progress=False)
    train(tiny_config(epochs=2, device="cuda"), tmp_path / "part", progress=False)
    resumed = train(
        tiny_config(epochs=4, device="cuda"), tmp_path / "part", resume=True, progress=False
    )
    a, b = _params(full.model), _params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_elbo"] for r in full.history] == [r["test_elbo"] for r in resumed.history]


def test_a_seed_fixes_the_result_on_cuda() -> None:
    a = _params(train(tiny_config(device="cuda"), progress=False).model)
    b = _params(train(tiny_config(device="cuda"), progress=False).model)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["vae", "m2"])
def test_the_commands_run_on_cuda(model, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--device", "cuda", "--epochs", "1", "--hidden", "32"]
    argv += ["--latent-dim", "2", "--model", model, "--no-progress"]
    if model == "m2":
        argv += ["--labels", "20"]
    assert main(argv) == 0  # draws every figure on the GPU
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"samples.png", "reconstructions.png", "traversal.png", "latent_map.png"} <= figures
    on = ["--device", "cuda"]
    assert main(["evaluate", str(run), *on, "--nll-samples", "100", "--iwae-samples", "10"]) == 0
    assert main(["plot", str(run), *on]) == 0
    for command in (["sample"], ["reconstruct"], ["interpolate"], ["traverse"]):
        assert main([*command, str(run), *on]) == 0
    assert main(["encode", str(run), *on, "--out", str(tmp_path / "z.npz")]) == 0
    score = ["score", str(run), *on, "--limit", "50", "--nll-samples", "20", "--regret-steps", "2"]
    assert main([*score, "--against"]) == 0


def test_device_errors_name_the_devices_there_are() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"{count} GPU\(s\), cuda:0..cuda:{count - 1}"):
        resolve_device(f"cuda:{count}")
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cuda:0").index == 0


def test_bf16_mixed_trains_on_cuda_with_float32_bounds() -> None:
    from pyro_vae.cli import train_config

    config = train_config(["--epochs", "1", "--device", "cuda", "--precision", "bf16-mixed"])
    result = train(config, progress=False)
    assert math.isfinite(result.history[0]["test_elbo"])
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_streaming_to_cuda_equals_the_tensor_on_the_device() -> None:
    """Pinned memory and non-blocking copies give the same batches, so the same training."""
    from pyro_vae.cli import train_config

    results = []
    for loading in ("device", "stream"):
        argv = ["--epochs", "1", "--device", "cuda", "--loading", loading]
        results.append(train(train_config(argv), progress=False).model.state_dict())
    for name, value in results[0].items():
        assert torch.equal(value, results[1][name]), name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
def test_ddp_on_two_gpus_through_the_cli(tmp_path) -> None:
    import subprocess
    import sys

    from .conftest import REPO

    cmd = [sys.executable, "-m", "pyro_vae", "train", "--devices", "2", "--device", "cuda"]
    cmd += ["--epochs", "2", "--run-dir", str(tmp_path / "run"), "--no-plots", "--no-progress"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    config, model, data = load_run(tmp_path / "run")  # reloads on the CPU
    assert config.train.devices == 2
