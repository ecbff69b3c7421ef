"""The disentanglement metrics on representations with known answers (the factors themselves, a
permutation, noise, a mix) and against computations by hand on fixed cases; the API and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats
import torch

from pyro_vae import disentangle as dis
from pyro_vae.errors import DataError
from pyro_vae.factors import FactorDataset

SIZES = (3, 6, 10)


def _factors(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in SIZES], 1)


def _noise(n: int, d: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def test_mutual_information_by_hand_on_a_tiny_table():
    # joint counts of (a, b): [[3, 1], [1, 3]] over 8 points
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])[:, None]
    b = np.array([0, 0, 0, 1, 0, 1, 1, 1])[:, None]
    p = np.array([[3, 1], [1, 3]]) / 8
    want = sum(p[i, j] * math.log(p[i, j] / (0.5 * 0.5)) for i in range(2) for j in range(2))
    assert dis.discrete_mutual_information(a, b)[0, 0] == pytest.approx(want)
    assert dis.entropies(b)[0] == pytest.approx(math.log(2))


def test_mig_by_hand_on_a_fixed_case():
    # factor v (4 values, H = log 4); z0 = v exactly (I = log 4), z1 = v // 2 (I = log 2), z2 constant
    v = np.tile(np.arange(4), 25)
    z = np.stack([v, v // 2, np.zeros_like(v)], 1).astype(float)
    assert dis.mig(z, v) == pytest.approx((math.log(4) - math.log(2)) / math.log(4))
    # the 20-bin discretiser: equal-width bins over each latent's range, labels from 1
    assert (dis.discretize(np.array([[0.0], [0.5], [1.0]]), 2)[:, 0] == [1, 2, 2]).all()


def test_mig_on_known_representations():
    f = _factors()
    n = f.shape[0]
    exact = np.concatenate([f.astype(float), _noise(n, 2)], 1)
    assert dis.mig(exact, f) > 0.95
    perm = exact[:, [3, 2, 0, 4, 1]]
    assert dis.mig(perm, f) == pytest.approx(dis.mig(exact, f))
    assert dis.mig(_noise(n, 5), f) < 0.05
    mixed = np.stack([f[:, 0] + f[:, 1], f[:, 1] + 0.01 * f[:, 0], f[:, 2]], 1).astype(float)
    assert 0.2 < dis.mig(mixed, f) < dis.mig(exact, f) - 0.2


def test_mig_posterior_on_known_representations():
    f = _factors(1200)
    n = f.shape[0]
    sd = np.full((n, 4), 0.05)
    exact = np.concatenate([f.astype(float), _noise(n, 1)], 1)
    assert dis.mig_posterior(exact, sd, f) > 0.9
    assert dis.mig_posterior(_noise(n, 4), sd, f) < 0.1
    # with narrow posteriors on distinct values, I(z0; v0) is H(v0) exactly
    mi = dis.posterior_mutual_information(exact, sd, f)
    assert mi[0, 0] == pytest.approx(dis.entropies(f)[0], abs=0.01)


def test_sap_on_known_representations():
    # two balanced binary factors, each copied by one latent: its own latent predicts it exactly,
    # any other is at chance (1/2), so SAP is 1 - 1/2 for each
    rng = np.random.default_rng(0)
    f = rng.integers(0, 2, (1500, 2))
    exact = np.concatenate([f.astype(float), _noise(1500, 2)], 1)
    m = dis.sap_matrix(exact, f)
    assert m[0, 0] == 1.0 and m[1, 1] == 1.0
    assert dis.sap(exact, f) == pytest.approx(0.5, abs=0.05)
    assert dis.sap(exact[:, [2, 1, 3, 0]], f) == pytest.approx(dis.sap(exact, f))
    assert dis.sap(_noise(1500, 4), f) < 0.05
    # a latent f0 + 2 f1 mixes both: one threshold splits f1 exactly, but f0 is its parity, which
    # no threshold separates (chance)
    mixed = np.stack([f[:, 0] + 2 * f[:, 1], _noise(1500, 1)[:, 0]], 1).astype(float)
    row = dis.sap_matrix(mixed, f)[0]
    assert row[1] == 1.0 and row[0] == pytest.approx(0.5, abs=0.06)


def test_dci_from_importance_by_hand():
    d, c = dci_eye = dis.dci_from_importance(np.eye(3))
    assert d == pytest.approx(1.0, abs=1e-6) and c == pytest.approx(1.0, abs=1e-6)
    d, c = dis.dci_from_importance(np.ones((3, 3)))
    assert d == pytest.approx(0.0, abs=1e-9) and c == pytest.approx(0.0, abs=1e-9)
    r = np.array([[0.6, 0.1], [0.1, 0.2], [0.0, 0.4]])
    ri = r + 1e-11  # as disentanglement_lib
    per_code = 1 - scipy.stats.entropy(ri.T, base=2)
    per_factor = 1 - scipy.stats.entropy(ri, base=3)
    want_d = np.sum(per_code * ri.sum(1) / ri.sum())
    want_c = np.sum(per_factor * ri.sum(0) / ri.sum())
    got = dis.dci_from_importance(r)
    assert got == pytest.approx((want_d, want_c))
    del dci_eye


def test_dci_on_known_representations():
    f = _factors(600)
    n = f.shape[0]
    exact = np.concatenate([f.astype(float), _noise(n, 2)], 1)
    good = dis.dci(exact, f)
    assert good["disentanglement"] > 0.8 and good["completeness"] > 0.8
    assert good["informativeness_test"] > 0.95
    bad = dis.dci(_noise(n, 5), f)
    assert bad["informativeness_test"] < 0.5 and bad["disentanglement"] < 0.3


def _grid_data() -> FactorDataset:
    """Every combination of the factors once, observed as the factor values themselves."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), -1).reshape(
        -1, len(SIZES)
    )
    return FactorDataset(grid, x=torch.as_tensor(grid, dtype=torch.float32))


def test_sampled_scores_on_known_representations():
    data = _grid_data()
    ident = lambda x: x.numpy() + 1e-3 * np.random.default_rng(0).standard_normal(x.shape)  # noqa: E731
    perm = lambda x: x.numpy()[:, [2, 0, 1]]  # noqa: E731
    noise = lambda x: np.random.default_rng(int(x.sum())).standard_normal((x.shape[0], 3))  # noqa: E731
    kw = dict(num_train=300, num_eval=150)
    fv = dis.factor_vae_score(ident, data, num_variance_estimate=500, **kw)
    assert fv["eval_accuracy"] == 1.0 and fv["num_active_dims"] == 3
    assert dis.factor_vae_score(perm, data, num_variance_estimate=500, **kw)["eval_accuracy"] == 1.0
    assert dis.factor_vae_score(noise, data, num_variance_estimate=500, **kw)["eval_accuracy"] < 0.6
    assert dis.beta_vae_score(ident, data, **kw)["eval_accuracy"] > 0.95
    assert dis.beta_vae_score(noise, data, **kw)["eval_accuracy"] < 0.6
    # a dimension that never varies is pruned
    flat = lambda x: np.concatenate([x.numpy(), np.zeros((x.shape[0], 1))], 1)  # noqa: E731
    assert dis.factor_vae_score(flat, data, num_variance_estimate=500, **kw)["num_active_dims"] == 3


def test_bad_input_is_refused():
    f = _factors(10)
    with pytest.raises(DataError, match="rows of latents"):
        dis.mig(np.zeros((9, 2)), f)
    with pytest.raises(DataError, match="NaN"):
        dis.mig(np.full((10, 2), np.nan), f)
    with pytest.raises(DataError, match="at least 2"):
        dis.mig(np.zeros((10, 1)), f)


def test_disentanglement_of_a_trained_run_api_and_cli(tmp_path, capsys):
    import pyro_vae as pv
    from pyro_vae.cli import main

    config = pv.RunConfig(
        data=pv.DataConfig(dataset="dsprites", dataset_options={"size": 256, "test_size": 128}),
        model=pv.ModelConfig(latent_dim=3, hidden=(16,)),
        train=pv.TrainConfig(epochs=1, batch_size=64, objective="tcvae"),
    )
    result = pv.train(config, tmp_path / "run", progress=False)
    scores = pv.disentanglement(
        result.model, result.dataset, num_points=128, num_votes=(20, 10), metrics=("mig", "sap")
    )
    assert set(scores) == {"mig", "sap"} and all(0 <= v <= 1 for v in scores.values())
    code = main(
        [
            "disentangle",
            str(tmp_path / "run"),
            "--json",
            "--points",
            "128",
            "--dci-points",
            "64",
            "--votes",
            "5",
            "5",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mig"] == pytest.approx(scores["mig"])
    for key in ("sap", "dci_disentanglement", "factor_vae_score", "beta_vae_score"):
        assert 0 <= out[key] <= 1
    assert all((tmp_path / "run" / "figures" / n).exists() for n in ("factor_mi.png",))
    # evaluate adds the quick metrics on data with factors
    argv = ["evaluate", str(tmp_path / "run"), "--json", "--nll-samples", "0", "--no-probe"]
    assert main(argv + ["--iwae-samples", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["mig"] == pytest.approx(scores["mig"]) and "sap" in evaluated
    # data without factors: one line naming what is missing
    digits = pv.train(
        pv.RunConfig(train=pv.TrainConfig(epochs=1), model=pv.ModelConfig(hidden=(8,))),
        tmp_path / "digits",
        progress=False,
    )
    assert main(["disentangle", str(tmp_path / "digits")]) == 2
    assert "no factor labels" in capsys.readouterr().err
    del digits


def test_the_long_metrics_report_progress_where_a_command_asks(capsys, monkeypatch):
    from pyro_vae import progress

    monkeypatch.setattr(progress, "_MIN_INTERVAL", 0.0)
    data = _grid_data()
    ident = lambda x: x.numpy()  # noqa: E731
    kw = dict(num_train=20, num_eval=10)
    with progress.reporting("lines"):
        dis.factor_vae_score(ident, data, num_variance_estimate=50, **kw)
        dis.beta_vae_score(ident, data, **kw)
        dis.dci(np.concatenate([_factors(60).astype(float)], 1), _factors(60))
    err = capsys.readouterr().err
    assert "FactorVAE score: done, 10/10 votes" in err
    assert "beta-VAE score: done, 10/10 points" in err
    assert "DCI trees: done" in err and "factors in" in err
    dis.beta_vae_score(ident, data, **kw)  # a library call outside a command stays silent
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "latents, factors",
    [
        ("abc", np.zeros((4, 2))),
        ([[1.0, 2.0], [3.0]], np.zeros((2, 1))),
        (np.zeros((4, 2)), [[1, 2], [3]]),
        (np.zeros((4, 2)), np.array([["a"], ["b"], ["c"], ["d"]])),
        (None, np.zeros((4, 1))),
    ],
)
def test_junk_arrays_are_refused_in_one_line(latents, factors):
    for metric in (dis.mig, dis.sap, dis.mutual_information_matrix):
        with pytest.raises(DataError):
            metric(latents, factors)
    with pytest.raises(DataError):
        dis.mig_posterior(latents, np.ones((4, 2)), factors)


@pytest.mark.parametrize(
    "value", ["abc", None, np.zeros(3), np.zeros((2, 0)), np.full((2, 2), np.nan)]
)
def test_the_matrix_helpers_refuse_what_is_not_a_finite_matrix(value):
    with pytest.raises(DataError):
        dis.discretize(value)
    with pytest.raises(DataError):
        dis.dci_from_importance(value)


def test_one_factor_has_no_voting_scores(tmp_path):
    import pyro_vae as pv

    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "one.npz", x=x, factors=np.arange(60) % 3)
    config = pv.RunConfig(
        data=pv.DataConfig(dataset=str(tmp_path / "one.npz")),
        model=pv.ModelConfig(latent_dim=2, hidden=(8,), likelihood="gaussian"),
        train=pv.TrainConfig(epochs=1, batch_size=16),
    )
    result = pv.train(config, tmp_path / "run", progress=False)
    scores = pv.disentanglement(result.model, result.dataset, num_votes=(10, 5))
    assert {"mig", "sap", "dci_disentanglement"} <= set(scores)
    assert not {"factor_vae_score", "beta_vae_score"} & set(scores)
    for metric in ("factor_vae", "beta_vae"):  # asked for by name: refused, not a vacuous 1.0
        with pytest.raises(DataError, match="at least 2 factors"):
            pv.disentanglement(result.model, result.dataset, metrics=(metric,), num_votes=(4, 2))


def test_factor_sizes_that_would_allocate_or_overflow_are_refused():
    with pytest.raises(DataError, match="factor sizes must lie in"):
        FactorDataset(np.array([[0, 2**40]]))
    with pytest.raises(DataError, match="more combinations"):
        FactorDataset(np.array([[2**20] * 4]) - 1)  # 2**80 combinations: an int64 key overflows
