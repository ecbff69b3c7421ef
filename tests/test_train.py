"""Training: loss goes down, seeds reproduce, resume equals uninterrupted, NaN stops cleanly."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pyro_vae import VAE, ConfigError, TrainingDiverged, load_run, train
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.train import resolve_device

from .conftest import tiny_config


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_training_lowers_the_loss() -> None:
    result = train(tiny_config(epochs=6, batch_size=64), progress=False)
    h = result.history
    assert len(h) == 6
    assert h[-1]["train_elbo"] > h[0]["train_elbo"] + 3  # nats per image, higher is better
    assert h[-1]["test_elbo"] > h[0]["test_elbo"] + 3
    assert all(r["epoch_time"] > 0 for r in h)


def test_seed_fixes_the_result() -> None:
    a = _params(train(tiny_config(), progress=False).model)
    b = _params(train(tiny_config(), progress=False).model)
    c = _params(train(tiny_config(seed=1), progress=False).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_equals_uninterrupted(tmp_path) -> None:
    full = train(tiny_config(epochs=4), tmp_path / "full", progress=False)
    train(tiny_config(epochs=2), tmp_path / "part", progress=False)
    resumed = train(tiny_config(epochs=4), tmp_path / "part", resume=True, progress=False)
    a, b = _params(full.model), _params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_elbo"] for r in full.history] == [r["test_elbo"] for r in resumed.history]
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_dynamic_binarization_resume_equals_uninterrupted(tmp_path) -> None:
    def cfg(epochs: int):
        dynamic = dataclasses.replace(tiny_config().data, binarize="dynamic")
        return dataclasses.replace(tiny_config(epochs=epochs), data=dynamic)

    full = train(cfg(3), tmp_path / "full", progress=False)
    train(cfg(1), tmp_path / "part", progress=False)
    resumed = train(cfg(3), tmp_path / "part", resume=True, progress=False)
    a, b = _params(full.model), _params(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip(tmp_path) -> None:
    result = train(tiny_config(), tmp_path / "run", progress=False)
    raw = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)  # no code runs on load
    assert raw["epoch"] == 2
    config, model, data = load_run(tmp_path / "run")
    assert config == result.config
    a, b = _params(result.model), _params(model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert data.test.shape == result.dataset.test.shape


def test_resume_with_changed_configuration_is_refused(tmp_path) -> None:
    train(tiny_config(), tmp_path / "run", progress=False)
    changed = dataclasses.replace(
        tiny_config(), model=dataclasses.replace(tiny_config().model, latent_dim=3)
    )
    with pytest.raises(ConfigError, match=r"model.latent_dim: 2 -> 3"):
        train(changed, tmp_path / "run", resume=True, progress=False)


def test_existing_run_is_not_overwritten(tmp_path) -> None:
    train(tiny_config(), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"pass resume=True to continue it, overwrite=True to"):
        train(tiny_config(), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


class _PoisonedVAE(VAE):
    """Produces a NaN likelihood after ``poison_after`` calls of the model."""

    def __init__(self, *args, poison_after: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls, self.poison_after = 0, poison_after

    def model(self, x: torch.Tensor) -> None:
        self.calls += 1
        if self.calls > self.poison_after:
            x = x * float("nan")
        super().model(x)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    cfg = tiny_config(epochs=3)
    # digits: 1438 training images / 256 = 6 steps an epoch, plus the test evaluation (1 batch)
    model = _PoisonedVAE((1, 8, 8), latent_dim=2, hidden=(32,), poison_after=6 + 1 + 3)
    with pytest.raises(
        TrainingDiverged, match=r"epoch 2, step 4.*last good checkpoint \(epoch 1\)"
    ):
        train(cfg, tmp_path / "run", progress=False, model=model)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


def test_bad_hyperparameters_are_named() -> None:
    with pytest.raises(ConfigError, match="^batch_size must be a positive integer"):
        train(tiny_config(batch_size=0), progress=False)
    with pytest.raises(ConfigError, match="^lr must be positive"):
        train(tiny_config(lr=-1.0), progress=False)
    with pytest.raises(ConfigError, match="unknown objective"):
        train(tiny_config(objective="nope"), progress=False)
    with pytest.raises(ConfigError, match="larger than the"):
        train(tiny_config(batch_size=10**6, objective="jit-elbo"), progress=False)


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu9")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="no usable GPU"):
            resolve_device("cuda")


def test_a_model_passed_as_an_object_is_recorded_and_reloads_with_load_run(tmp_path) -> None:
    from pyro_vae.cli import main

    custom = VAE((1, 8, 8), latent_dim=3, hidden=(16,), guide="lowrank")
    result = train(tiny_config(), tmp_path / "run", progress=False, model=custom)
    config = load_checkpoint(tmp_path / "run")["config"]
    # config.json says what the model is, not what the configuration passed beside it said
    assert (config.model.model, config.model.latent_dim, config.model.guide) == (
        "vae",
        3,
        "lowrank",
    )
    assert config.model.hidden == (16,)
    assert "LowRankNormal" in (tmp_path / "run" / "model.txt").read_text()
    assert '"lowrank"' in (tmp_path / "run" / "model.json").read_text()
    _, model, _ = load_run(tmp_path / "run")  # rebuilt from its description alone
    a, b = _params(result.model), _params(model)
    assert type(model) is VAE and all(torch.equal(a[k], b[k]) for k in a)
    fresh = VAE((1, 8, 8), latent_dim=3, hidden=(16,), guide="lowrank")
    _, model, _ = load_run(tmp_path / "run", model=fresh)
    assert model is fresh and all(torch.equal(a[k], v) for k, v in _params(model).items())
    assert main(["evaluate", str(tmp_path / "run"), "--nll-samples", "0"]) == 0
    again = VAE((1, 8, 8), latent_dim=3, hidden=(16,), guide="lowrank")
    resumed = train(
        tiny_config(epochs=3), tmp_path / "run", resume=True, progress=False, model=again
    )
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    # continued without the object: rebuilt from the checkpoint's description
    saved = load_checkpoint(tmp_path / "run")["config"].replace(train={"epochs": 4})
    resumed = train(saved, tmp_path / "run", resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_a_model_built_from_the_config_keeps_the_configs_name(tmp_path) -> None:
    from pyro_vae import build_model, load_dataset

    cfg = tiny_config()
    data = load_dataset(cfg.data)
    model = build_model(cfg.model, data.x_shape, data.num_classes)
    train(cfg, tmp_path / "run", progress=False, model=model, dataset=data)
    assert load_checkpoint(tmp_path / "run")["config"].model.model == "vae"
    reloaded, model, _ = load_run(tmp_path / "run")  # rebuilt from config.json alone
    assert reloaded.model.model == "vae" and type(model) is VAE


def test_resume_and_reload_refuse_other_data(tmp_path) -> None:
    from pyro_vae import CheckpointError, load_dataset

    cfg = tiny_config(epochs=1)
    data = load_dataset(cfg.data)
    train(cfg, tmp_path / "run", progress=False, dataset=data)
    other = dataclasses.replace(data, train=1 - data.train)
    with pytest.raises(ConfigError, match="the data differ"):
        train(tiny_config(epochs=2), tmp_path / "run", resume=True, progress=False, dataset=other)
    with pytest.raises(CheckpointError, match="the data differ"):
        load_run(tmp_path / "run", dataset=other)
    load_run(tmp_path / "run", dataset=data)
