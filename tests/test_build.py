"""The build layer: each part's options typed and checked from its own signature, the old model flags
kept as aliases, old configurations read, and a plain model/guide pair wrapped once."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from pyro_vae import VAE, ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig, train
from pyro_vae.build import validate
from pyro_vae.cli import train_config
from pyro_vae.models import MODELS, PyroPair, as_model


@pytest.mark.parametrize(
    ("flag", "value", "model", "key", "typed"),
    [
        ("--labels", "9", "m2", "labels", 9),
        ("--val-size", "7", "m1m2", "val_size", 7),
        ("--aux-weight", "5", "m2", "aux_weight", 5.0),
        ("--labelled-every", "0", "m2", "labelled_every", 0),
        ("--m1-epochs", "2", "m1m2", "m1_epochs", 2),
        ("--latent-dim2", "3", "hvae", "latent_dim2", 3),
    ],
)
def test_the_old_flags_are_aliases_of_model_options(flag, value, model, key, typed) -> None:
    context = ["--model", model] + (
        ["--labels", "20"] if model != "hvae" and key != "labels" else []
    )
    config = train_config([*context, flag, value])
    assert config.model.model_options[key] == typed
    assert type(config.model.model_options[key]) is type(typed)
    same = train_config([*context, "--model-opt", f"{key}={value}"])
    assert same.model.model_options == config.model.model_options


def test_model_options_are_typed_from_the_signature_and_refused_where_unread() -> None:
    assert train_config(["--model", "hvae", "--model-opt", "hidden2=8,4"]).model.model_options == {
        "hidden2": (8, 4)
    }
    with pytest.raises(
        ConfigError, match=r"--m1-epochs is not used by --model m2.* m1m2 \(--model-opt m1_epochs"
    ):
        train_config(["--model", "m2", "--labels", "20", "--m1-epochs", "1"])
    with pytest.raises(ConfigError, match="--model-opt hidden2 is not used by --model vae"):
        train_config(["--model-opt", "hidden2=8"])
    with pytest.raises(ConfigError, match="labels must be an integer"):
        train_config(["--model", "m2", "--labels", "many"])
    with pytest.raises(ConfigError, match="--m1-epochs must lie in 0..2"):
        train_config(["--model", "m1m2", "--labels", "20", "--epochs", "3", "--m1-epochs", "3"])


class WithOption(VAE):
    """A user's model whose one new option is one keyword argument."""

    def __init__(self, x_shape, latent_dim=20, *, width_scale: float = 1.0, **parts) -> None:
        super().__init__(x_shape, latent_dim, **parts)
        self.width_scale = width_scale


def test_a_new_keyword_argument_is_a_model_option_with_no_other_change() -> None:
    config = RunConfig(model=ModelConfig(model_options={"width_scale": "0.5"}))
    assert validate(config, model_class=WithOption).model.model_options == {"width_scale": 0.5}
    assert "width_scale" not in MODELS.parameters("vae")
    with pytest.raises(ConfigError, match="width_scale"):
        validate(config)  # the registered VAE has no such option


def test_a_configuration_of_pyro_vae_0_1_is_read_with_its_model_options() -> None:
    old = RunConfig().to_dict()
    old["model"]["latent_dim2"] = 0
    old["train"].update(labels=100, val_size=None, aux_weight=5.0, labelled_every=1, m1_epochs=3)
    del old["model"]["model_options"]
    config = RunConfig.from_json(json.dumps(old))
    assert config.model.model_options == {"labels": 100, "aux_weight": 5.0, "m1_epochs": 3}
    assert RunConfig.from_json(config.to_json()) == config


def test_config_is_a_leaf_that_checks_no_part() -> None:
    config = RunConfig(model=ModelConfig(guide="no-such-guide"))
    assert config.coerced().model.guide == "no-such-guide"  # config itself only types fields
    with pytest.raises(ConfigError, match="unknown guide 'no-such-guide'"):
        validate(config)


class Plain(nn.Module):
    """A Pyro model/guide pair that is not a pyro_vae Model."""

    def __init__(self) -> None:
        super().__init__()
        self.vae = VAE((1, 4, 4), 2, hidden=(8,), name="plain_pair_vae")

    def model(self, x):
        return self.vae.model(x)

    def guide(self, x):
        return self.vae.guide(x)


def test_a_plain_pair_is_wrapped_once_and_trains_as_itself(tmp_path) -> None:
    from pyro_vae import Dataset

    plain = Plain()
    wrapped = as_model(plain)
    assert isinstance(wrapped, PyroPair) and as_model(wrapped) is wrapped
    assert wrapped.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(40, 1, 4, 4).round()
    data = Dataset("tiny", x[:32], x[32:])
    config = RunConfig(
        data=DataConfig("digits"),
        train=TrainConfig(epochs=1, batch_size=8, device="cpu"),
    )
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    result = train(config, tmp_path / "run", dataset=data, model=plain, progress=False)
    assert result.model is plain
    assert any(not torch.equal(before[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(ConfigError, match="needs an object with .model and .guide"):
        as_model(nn.Linear(2, 2))


def test_a_run_of_pyro_vae_0_1_loads_and_resumes(tmp_path) -> None:
    """A run directory whose config.json and checkpoint hold the model options where pyro-vae 0.1
    wrote them (train.labels, ...) loads, and resumes, as the same run."""
    from pyro_vae.train import load_run
    from pyro_vae.train import train as train_run

    config = RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig("m2", latent_dim=2, hidden=(16,), model_options={"labels": 30}),
        train=TrainConfig(epochs=1, batch_size=128, device="cpu"),
    )
    run = tmp_path / "run"
    train_run(config, run, progress=False)
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    old = json.loads(payload["config"])
    del old["model"]["model_options"]
    old["model"]["latent_dim2"] = 0
    old["train"].update(labels=30, val_size=None, aux_weight=None, labelled_every=1, m1_epochs=None)
    payload["config"] = json.dumps(old)
    torch.save(payload, run / "checkpoint.pt")
    (run / "config.json").write_text(json.dumps(old))
    loaded, model, _ = load_run(run)
    assert loaded.model.model_options == {"labels": 30} and model.num_labelled == 30
    resumed = train_run(config.replace(train={"epochs": 2}), run, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_the_evaluation_kernel_restores_each_modules_mode_and_the_random_state() -> None:
    from pyro_vae.kernel import chunks, evaluating, seeded

    vae = VAE((1, 4, 4), 2, hidden=(8,))
    vae.decoder.eval()  # a mode of its own, which an evaluation must give back
    with evaluating(vae):
        assert not vae.training and not vae.encoder.training and not torch.is_grad_enabled()
    assert vae.training and vae.encoder.training and not vae.decoder.training
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    with seeded(5):
        a = torch.rand(3)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream goes on undisturbed
    with seeded(5):
        assert torch.equal(torch.rand(3), a)
    assert list(chunks(10, 4)) == [4, 4, 2]
