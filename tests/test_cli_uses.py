"""The commands for what a trained VAE is for: score (anomaly scores and detection metrics), encode
(latent means and scales) and traverse (latent traversals), end to end on a small run."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from pyro_vae import load_run
from pyro_vae.cli import main
from pyro_vae.represent import encode
from pyro_vae.scores import SCORES


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("uses") / "run"
    argv = ["train", "--run-dir", str(path), "--epochs", "3", "--latent-dim", "3"]
    assert main([*argv, "--hidden", "32", "--no-progress", "--no-plots"]) == 0
    return path


def test_score_writes_a_table_in_the_data_order_and_detection_metrics(run, tmp_path, capsys):
    npz = tmp_path / "noise.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.random((20, 1, 8, 8)), x_test=rng.random((40, 1, 8, 8)))
    out = tmp_path / "noise.csv"
    argv = ["score", str(run), "--data", str(npz), "--against", "--out", str(out)]
    argv += ["--nll-samples", "20", "--regret-steps", "3", "--typicality-points", "50", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 40 == result["examples"]
    # every score, typicality included, but the complexity score: a Bernoulli of grey pixels is no
    # code length of the 8-bit image (pyro_vae.units), and the command says so
    assert set(result["detection"]) == set(SCORES) - {"complexity"}
    assert "no complexity score: the data are not all values p(x|z)" in captured.err
    # uniform noise against the run's own test digits: the likelihood sees it at once
    assert result["detection"]["log_px"]["auroc"] > 0.9
    assert result["detection"]["elbo"]["auroc"] > 0.9
    # the table's first row is the first noise image's score (the data's order)
    _, model, _ = load_run(run)
    from pyro_vae.scores import score

    x = np.load(npz)["x_test"].astype(np.float32)
    import torch

    first = score(model, torch.as_tensor(x[:1]), num_samples=20, scores=("log_px",))["log_px"]
    assert float(rows[0]["log_px"]) == pytest.approx(float(first[0]), abs=0.5)
    for name in result["figures"]:
        assert (tmp_path / name.split("/")[-1]).exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "{tmp}/t.txt"], "written as .csv or .npz"),
        (["--nll-samples", "0"], "--nll-samples must be a positive integer"),
        (["--regret-steps", "-1"], "--regret-steps must be 0"),
        (["--limit", "0"], "--limit must be a positive integer"),
        (["--data", "{tmp}/wrong.npz"], "shape"),
    ],
)
def test_score_refuses_bad_input_in_one_line(run, tmp_path, capsys, argv, message):
    np.savez(tmp_path / "wrong.npz", x=np.random.default_rng(0).random((10, 5)))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["score", str(run), *argv, "--typicality-points", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_encode_writes_the_latent_means_of_the_test_set(run, tmp_path, capsys):
    out = tmp_path / "enc.npz"
    assert main(["encode", str(run), "--out", str(out)]) == 0
    enc = np.load(out)
    _, model, data = load_run(run)
    expected = encode(model, data.test)
    assert enc["mean"].shape == (data.test.shape[0], 3)
    np.testing.assert_allclose(enc["mean"], expected["mean"], rtol=1e-6)
    np.testing.assert_array_equal(enc["labels"], data.test_labels.numpy())
    assert main(["encode", str(run), "--out", str(tmp_path / "enc.csv")]) == 2


def test_traverse_draws_one_row_per_dimension(run, tmp_path, capsys):
    out = tmp_path / "t.png"
    assert main(["traverse", str(run), "--steps", "5", "--out", str(out)]) == 0
    assert out.exists() and out.stat().st_size > 1000
    assert main(["traverse", str(run), "--image", "100000"]) == 2
    assert "--image must lie in" in capsys.readouterr().err
