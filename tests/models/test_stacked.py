"""M1+M2: the stacked bound by hand, the two training stages, resume, reload and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset, train
from pyro_vae.build import validate
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.models import StackedM2
from pyro_vae.objectives.kl import build_objective
from pyro_vae.optim import adam
from pyro_vae.plan import Feed
from pyro_vae.train import load_run


def test_stacked_bound_equals_the_sum_over_classes_by_hand() -> None:
    pyro.clear_param_store()
    K, N, D1, D = 3, 5, 4, 2
    m = StackedM2((1, 2, 2), K, latent_dim=D1, latent_dim2=D, hidden=(6,))
    x = torch.bernoulli(torch.full((N, 1, 2, 2), 0.4))
    torch.manual_seed(7)
    loss = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, m.guide, x)

    # by hand, with the same noise: z1 ~ q(z1|x) once per x, z ~ q(z|z1,y) for every (y, x):
    # log p(x|z1) - log q(z1|x) + sum_y q(y|x) [log p(z1|y,z) + log p(y) + log p(z) - log q(z|z1,y)]
    # + H(q(y|x))
    torch.manual_seed(7)
    with torch.no_grad():
        q1 = m.m1.encode(x)
        z1 = q1.rsample()
        log_px = (
            torch.distributions.Bernoulli(logits=m.m1.decoder(z1)).log_prob(x).sum((-1, -2, -3))
        )
        ys = torch.arange(K).unsqueeze(-1)  # (K, 1)
        onehot = F.one_hot(ys, K).float().expand(K, N, K)
        q_z = m.q(m.join(torch.cat([m.encoder(z1).expand(K, N, -1), onehot], -1)))
        z = q_z.rsample()  # (K, N, D)
        p_z1 = m.likelihood(m.decoder(torch.cat([z, onehot], -1)))
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        inner = p_z1.log_prob(z1) + log_pz - math.log(K) - q_z.log_prob(z)  # (K, N)
        q_y = torch.softmax(m.classifier(q1.mean), -1).T  # (K, N): the classifier reads the mean
        entropy = -(q_y * q_y.log()).sum(0)
        by_hand = -(log_px - q1.log_prob(z1) + (q_y * inner).sum(0) + entropy).sum()
    assert loss == pytest.approx(float(by_hand), rel=1e-5, abs=1e-4)
    # the x term is part of it: the bound is on log p(x), not only on M2's log p(z1)
    assert abs(float(log_px.sum())) > 1.0


def stacked_config(epochs: int = 3, m1_epochs: int = 1, seed: int = 0) -> RunConfig:
    return RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(
            "m1m2",
            latent_dim=6,
            hidden=(32,),
            # selection by 10 of the 50 labels
            model_options={"m1_epochs": m1_epochs, "labels": 50, "val_labels": 10},
        ),
        train=TrainConfig(epochs=epochs, batch_size=128, lr=3e-3, seed=seed, device="cpu"),
    )


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {k for k, v in module.state_dict().items() if not torch.equal(v, before[k])}


def test_first_stage_trains_m1_only_and_second_stage_m2_only() -> None:
    config = stacked_config(epochs=2, m1_epochs=1)
    data = load_dataset(config.data)
    pyro.clear_param_store()
    torch.manual_seed(0)
    m = StackedM2(data.x_shape, 10, latent_dim=6, hidden=(32,), **config.model.model_options)
    optim = adam(1e-3)
    plan = m.training_plan(data, config, optim, build_objective("elbo"))
    feed = Feed(data, seed=0)
    before = _snapshot(m)
    for _ in plan.epoch(feed):
        pass
    assert plan.end_epoch(data) == {"stage": 1.0}
    changed = _changed(before, m)
    assert changed and all(k.startswith("m1.") for k in changed), changed

    before = _snapshot(m)
    for _ in plan.epoch(feed):
        pass
    record = plan.end_epoch(data)
    assert record["stage"] == 2.0
    with torch.no_grad():
        logits = m.classifier(m.m1.q.mean(m.m1.encoder(plan.val_x)))
    expected = (logits.argmax(-1) == plan.val_y).float().mean()
    assert record["val_accuracy"] == pytest.approx(float(expected))
    changed = _changed(before, m)
    assert any(k.startswith("classifier.") for k in changed)
    assert any(k.startswith("decoder.") for k in changed)
    assert not any(k.startswith("m1.") for k in changed), changed
    assert not any(p.requires_grad for p in m.m1.parameters())  # frozen: no wasted gradients


def test_resume_reload_and_the_validation_pick(tmp_path: Path) -> None:
    straight = train(stacked_config(epochs=4, m1_epochs=2), tmp_path / "a", progress=False)
    train(stacked_config(epochs=3, m1_epochs=2), tmp_path / "b", progress=False)
    resumed = train(
        stacked_config(epochs=4, m1_epochs=2), tmp_path / "b", resume=True, progress=False
    )
    for a, b in zip(straight.history, resumed.history):
        assert a["stage"] == b["stage"] and a["train_elbo"] == pytest.approx(b["train_elbo"])
    assert [h["stage"] for h in straight.history] == [1.0, 1.0, 2.0, 2.0]
    assert "val_accuracy" not in straight.history[0]  # validation picks among M2's epochs only
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    best = straight.history[-1]["best_epoch"]
    assert best in (3, 4)
    _, model, data = load_run(tmp_path / "b")
    acc = model.accuracy(data.test, data.test_labels)
    assert acc == pytest.approx(straight.history[best - 1]["test_accuracy"])
    assert all(p.requires_grad for p in model.parameters())  # a reloaded model trains as a whole


def test_m1_epochs_must_leave_m2_an_epoch() -> None:
    with pytest.raises(ConfigError, match="--m1-epochs"):
        validate(stacked_config(epochs=3, m1_epochs=3))


def test_cli_trains_evaluates_and_draws_m1m2(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["--model", "m1m2", "--labels", "30", "--epochs", "2", "--m1-epochs", "1"]
    args += ["--hidden", "32", "--latent-dim", "4", "--latent-dim2", "2"]
    assert main(["train", "--run-dir", str(run), "--no-progress", *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--nll-samples", "0", "--iwae-samples", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_elbo"] < 0
    # the reported accuracy is q(y|x)'s on the test set, computed here by hand
    from pyro_vae import load_run

    _, model, data = load_run(run)
    with torch.no_grad():
        expected = (model.predict(data.test) == data.test_labels).float().mean()
    assert out["test_accuracy"] == pytest.approx(float(expected))
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"conditional_samples.png", "style_transfer.png", "reconstructions.png"} <= figures
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["model_options"]["m1_epochs"] == 1 and config["model"]["model"] == "m1m2"


def test_m1m2_refuses_another_objective(tmp_path: Path, capsys) -> None:
    args = ["train", "--model", "m1m2", "--labels", "30", "--objective", "iwae", "--epochs", "2"]
    args += ["--no-progress", "--no-plots", "--run-dir", str(tmp_path / "run")]
    assert main(args) == 2
    assert "--model m1m2 trains with --objective elbo, not iwae" in capsys.readouterr().err
