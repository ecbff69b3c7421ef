"""Bits per dimension: reported exactly where p(x|z) is a distribution over the quantized data."""

from __future__ import annotations

import math

import pytest
import torch

from pyro_vae import VAE
from pyro_vae.evaluate import report
from pyro_vae.units import NotQuantized, bits_per_dim, quantized_dims


def eight_bit(n: int = 6, shape=(1, 4, 4)) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, *shape), generator=g).float() / 255


def test_bits_per_dim_is_nats_over_dims_ln2() -> None:
    assert bits_per_dim(-math.log(256) * 10, 10) == pytest.approx(8.0)
    # a model of 8-bit pixels that puts 1/256 on every level has exactly 8 bits/dim
    assert bits_per_dim(torch.tensor(-784 * math.log(256.0)), 784) == pytest.approx(8.0)


@pytest.mark.parametrize(
    ("likelihood", "network"),
    [("discretized-logistic", "mlp"), ("logistic-mixture", "resnet"), ("bernoulli", "pixelcnn")],
)
def test_evaluate_reports_bits_per_dim_of_each_bound(likelihood, network) -> None:
    torch.manual_seed(0)
    x = eight_bit()
    if likelihood == "bernoulli":
        x = x.round()
    vae = VAE(
        (1, 4, 4),
        2,
        hidden=(8,),
        likelihood=likelihood,
        network=network,
        likelihood_options={"components": 2} if likelihood == "logistic-mixture" else {},
        network_options={"channels": 4} if network != "mlp" else {},
    )
    assert quantized_dims(vae.model, x) == 16
    out = report(vae, x, nll_samples=8, iwae_samples=4, stats_samples=2)
    ln2 = math.log(2)
    for key in ("test_elbo", "test_iwae", "test_log_likelihood"):
        assert out[f"{key}_bpd"] == pytest.approx(-out[key] / (16 * ln2), rel=1e-12)
    assert out["test_log_likelihood_bpd"] > 0


def test_a_density_or_grey_bernoulli_reports_no_bits_per_dim() -> None:
    x = eight_bit()
    gaussian = VAE((1, 4, 4), 2, hidden=(8,), likelihood="gaussian")
    out = report(gaussian, x, nll_samples=4, stats_samples=2)
    assert not any(k.endswith("_bpd") for k in out)
    assert out["bits_per_dim"].startswith("not reported: p(x|z) is Normal, a density")
    grey = VAE((1, 4, 4), 2, hidden=(8,))
    with pytest.raises(NotQuantized, match="grey pixels"):
        quantized_dims(grey.model, x)
    assert "bits_per_dim" in report(grey, x, stats_samples=2)
    # the same data on 5-bit levels are not 8-bit data for a bits=5 likelihood's support, and back
    five = VAE(
        (1, 4, 4), 2, hidden=(8,), likelihood="discretized-logistic", likelihood_options={"bits": 5}
    )
    with pytest.raises(NotQuantized, match="not all values"):
        quantized_dims(five.model, x)
    assert quantized_dims(five.model, torch.randint(0, 32, (3, 1, 4, 4)).float() / 31) == 16


@pytest.fixture(scope="module")
def eight_bit_file(tmp_path_factory) -> str:
    import numpy as np

    g = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 8)[None, None, :, None]
    x = (g.random((60, 1, 8, 8)) * ramp * 255).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "eight_bit.npz"
    np.savez(path, x=x)
    return str(path)


def test_the_cli_trains_evaluates_and_scores_in_bits(eight_bit_file, tmp_path, capsys) -> None:
    import json

    from pyro_vae.cli import main

    run = str(tmp_path / "run")
    argv = ["train", "--run-dir", run, "--dataset", eight_bit_file, "--no-progress"]
    tiny = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--batch-size", "16"]
    opts = ["--likelihood", "logistic-mixture", "--likelihood-opt", "components=2"]
    net = ["--network", "resnet", "--network-opt", "channels=4", "blocks=1"]
    assert main([*argv, *tiny, *opts, *net]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["network_options"] == {"channels": 4, "blocks": 1}
    capsys.readouterr()
    assert main(["evaluate", run, "--json", "--nll-samples", "4", "--no-probe"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_log_likelihood_bpd"] == pytest.approx(
        -result["test_log_likelihood"] / (64 * math.log(2))
    )
    assert main(["score", run, "--nll-samples", "4", "--regret-steps", "1", "--json"]) == 0
    assert "complexity" in capsys.readouterr().out

    gauss = str(tmp_path / "gauss")
    argv = ["train", "--run-dir", gauss, "--dataset", eight_bit_file, "--no-progress"]
    assert main([*argv, *tiny, "--likelihood", "gaussian"]) == 0
    capsys.readouterr()
    assert main(["score", gauss, "--nll-samples", "4", "--regret-steps", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "no complexity score: p(x|z) is Normal, a density" in captured.err
    assert '"complexity"' not in captured.out


def test_the_training_curves_get_a_bits_per_dimension_axis(tmp_path, monkeypatch) -> None:
    from pyro_vae import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    history = [{"epoch": 1, "train_elbo": -900.0, "test_elbo": -880.0}]
    plots.training_curves(history, tmp_path / "a.png", dims=784)
    plots.training_curves(history, tmp_path / "b.png")
    with_bits, without = (f.get_axes()[0] for f in figures)
    assert without.child_axes == []
    (right,) = with_bits.child_axes
    assert right.get_ylabel() == "bits per dimension (lower is better)"
    # the axis maps -880 nats over 784 dims to 880 / (784 ln 2) bits
    assert right._functions[0](-880.0) == pytest.approx(880 / (784 * math.log(2)))
