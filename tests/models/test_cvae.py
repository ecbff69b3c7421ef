"""The conditional VAE: its bounds, that it uses the label, and the CLI end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, evaluate, load_dataset, train
from pyro_vae.cli import main
from pyro_vae.errors import DataError
from pyro_vae.models import CVAE


def test_unlabelled_bound_is_the_mean_of_the_conditional_bounds() -> None:
    """With q(y) uniform, TraceEnum_ELBO's bound on log p(x) is the average over labels of the
    labelled bound log p(x, y) + log K; with one particle and a deterministic guide mean the z noise
    would differ between the two, so compare many-particle estimates."""
    pyro.clear_param_store()
    m = CVAE((1, 2, 2), 3, latent_dim=2, hidden=(6,))
    x = torch.bernoulli(torch.full((4, 1, 2, 2), 0.3))
    enum = evaluate.elbo(m, x, num_particles=4000) * x.shape[0]
    elbo = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    per_label = [
        -elbo.loss(m.model, m.guide, x, torch.full((4,), k)) + x.shape[0] * math.log(3)
        for k in range(3)
    ]
    assert enum == pytest.approx(sum(per_label) / 3, abs=0.05)


def test_trained_cvae_uses_the_label() -> None:
    torch.set_num_threads(1)
    config = RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig("cvae", latent_dim=4, hidden=(64,)),
        train=TrainConfig(epochs=8, batch_size=128, lr=3e-3, device="cpu"),
    )
    r = train(config, progress=False)
    data = r.dataset
    right = r.model.conditional_elbo(data.test, data.test_labels)
    wrong = r.model.conditional_elbo(data.test, (data.test_labels + 1) % 10)
    assert right > wrong + 1.0
    # the generative model as a classifier does far better than chance
    accuracy = (r.model.predict(data.test) == data.test_labels).float().mean()
    assert accuracy > 0.5
    assert {"test_conditional_elbo", "test_elbo"} <= set(r.history[-1])


def test_cvae_needs_labels() -> None:
    data = load_dataset(DataConfig("digits"))
    unlabelled = replace(data, train_labels=None, test_labels=None)
    config = RunConfig(
        model=ModelConfig("cvae", hidden=(8,)), train=TrainConfig(epochs=1, device="cpu")
    )
    with pytest.raises(DataError, match="needs labelled data"):
        train(config, dataset=unlabelled, progress=False)


def test_cli_trains_evaluates_and_draws_cvae(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["--model", "cvae", "--epochs", "1", "--hidden", "32", "--latent-dim", "2"]
    assert main(["train", "--run-dir", str(run), "--no-progress", *args]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", "--nll-samples", "0", "--iwae-samples", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_elbo"] < 0 and out["test_conditional_elbo"] < 0
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"conditional_samples.png", "style_transfer.png", "reconstructions.png"} <= figures
    assert main(["sample", str(run), "-n", "9"]) == 0
