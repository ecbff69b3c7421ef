"""Encodings of q(z|x) and the linear probe (pyro_vae.represent)."""

from __future__ import annotations

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions.transforms import AffineTransform

from pyro_vae import (
    ConfigError,
    DataConfig,
    DataError,
    ModelConfig,
    RunConfig,
    TrainConfig,
    evaluate,
    represent,
)
from pyro_vae.guides import AmortizedGuide, DiagonalNormal
from pyro_vae.models import VAE, HierarchicalVAE, StackedM2
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.m2 import M2

SHAPE = (1, 4, 4)


def _x(n: int = 30) -> torch.Tensor:
    return torch.rand(n, *SHAPE).round()


# -- encode -------------------------------------------------------------------------------------
def test_encode_means_and_scales_are_the_diagonal_guides() -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,)), _x()
    enc = represent.encode(vae, x, batch_size=7)  # batches of 7: 30 is not a multiple
    with torch.no_grad():
        loc, scale = vae.q.loc_scale(vae.encoder(x))
        q = vae.encode(x)
    assert enc["mean"].shape == enc["scale"].shape == (30, 3)
    np.testing.assert_allclose(enc["mean"], vae.latent_mean(x).detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["mean"], loc.numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["scale"], scale.numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["scale"], q.base_dist.scale.numpy(), rtol=1e-6)
    assert int(enc["scale_samples"]) == 0  # closed form
    assert "labels" not in enc and "predicted_labels" not in enc


def test_encode_keeps_the_datas_order_and_passes_labels_through() -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,)), _x()
    labels = torch.arange(30) % 4
    perm = torch.randperm(30)
    enc = represent.encode(vae, x, labels)
    shuffled = represent.encode(vae, x[perm], labels[perm], batch_size=4)
    np.testing.assert_allclose(shuffled["mean"], enc["mean"][perm.numpy()], rtol=1e-6)
    np.testing.assert_allclose(shuffled["scale"], enc["scale"][perm.numpy()], rtol=1e-6)
    np.testing.assert_array_equal(enc["labels"], labels.numpy())
    np.testing.assert_array_equal(shuffled["labels"], labels[perm].numpy())
    assert enc["labels"].dtype == np.int64


def test_encode_runs_in_eval_mode_and_restores_the_mode() -> None:
    # dropout in the encoder: only eval mode gives the same features twice
    encoder = nn.Sequential(nn.Flatten(-3), nn.Linear(16, 8), nn.Dropout(0.5))
    encoder.feature_dim = 8
    vae, x = VAE(SHAPE, 3, hidden=(8,), encoder=encoder), _x()
    vae.train()
    a = represent.encode(vae, x)
    b = represent.encode(vae, x)
    assert vae.training
    np.testing.assert_array_equal(a["mean"], b["mean"])
    vae.eval()
    np.testing.assert_allclose(a["mean"], vae.latent_mean(x).detach().numpy(), rtol=1e-6)
    represent.encode(vae, x)
    assert not vae.training


@pytest.mark.parametrize("cls", [CVAE, M2])
def test_label_models_encode_the_z_part_with_the_predicted_label(cls) -> None:
    model, x = cls(SHAPE, 3, latent_dim=2, hidden=(8,)), _x()
    given = torch.zeros(30, dtype=torch.long)
    enc = represent.encode(model, x, given)
    model.eval()
    predicted = model.predict(x)
    with torch.no_grad():
        full = model.latent_mean(x)  # [z, onehot(y)]
        q = model.encode(x, predicted)
    assert enc["mean"].shape == enc["scale"].shape == (30, 2)
    np.testing.assert_allclose(enc["mean"], full[:, :2].numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["scale"], q.base_dist.scale.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(enc["predicted_labels"], predicted.numpy())
    np.testing.assert_array_equal(enc["labels"], given.numpy())
    # the labels passed in never enter q: other labels, the same encoding
    other = represent.encode(model, x, torch.ones(30, dtype=torch.long))
    np.testing.assert_array_equal(other["mean"], enc["mean"])


def test_stacked_and_hierarchical_models_encode_their_traversed_latent() -> None:
    x = _x()
    hvae = HierarchicalVAE(SHAPE, 3, hidden=(8,))
    enc = represent.encode(hvae, x)
    with torch.no_grad():
        np.testing.assert_allclose(enc["mean"], hvae.latent_mean(x).numpy(), rtol=1e-6)
        np.testing.assert_allclose(enc["scale"], hvae.encode(x).base_dist.scale.numpy(), rtol=1e-6)
    m1m2 = StackedM2(SHAPE, 3, latent_dim=3, latent_dim2=2, hidden=(8,))
    enc = represent.encode(m1m2, x)
    m1m2.eval()
    with torch.no_grad():
        np.testing.assert_allclose(enc["mean"], m1m2.latent_mean(x)[:, :2].numpy(), rtol=1e-6)
    assert enc["scale"].shape == (30, 2) and enc["predicted_labels"].shape == (30,)


def test_lowrank_scales_are_the_marginal_standard_deviations() -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,), guide="lowrank"), _x()
    enc = represent.encode(vae, x)
    with torch.no_grad():
        var = vae.encode(x).variance
    np.testing.assert_allclose(enc["scale"], var.sqrt().numpy(), rtol=1e-5)
    assert int(enc["scale_samples"]) == 0


def test_flow_scales_are_estimated_from_draws_reproducibly() -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,), guide="iaf"), _x(10)
    state = torch.get_rng_state()
    enc = represent.encode(vae, x, scale_samples=400)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is left alone
    assert int(enc["scale_samples"]) == 400
    torch.manual_seed(123)  # another global state: the same draws all the same
    again = represent.encode(vae, x, scale_samples=400)
    np.testing.assert_array_equal(enc["scale"], again["scale"])
    assert not np.array_equal(represent.encode(vae, x, seed=1)["scale"], enc["scale"])
    with torch.no_grad():
        draws = vae.encode(x).sample((20000,))
        np.testing.assert_allclose(enc["mean"], vae.latent_mean(x).numpy(), rtol=1e-6)
    np.testing.assert_allclose(enc["scale"], draws.std(0).numpy(), rtol=0.12)
    assert "scale" not in represent.encode(vae, x, scales=False)


class SampledMeanGuide(AmortizedGuide):
    """A guide whose q has neither mean nor stddev in closed form (2 x a diagonal Normal, written as
    a transform): its latent_mean is AmortizedGuide's mean of 64 draws."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__(feature_dim, latent_dim)
        self.inner = DiagonalNormal(feature_dim, latent_dim)

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        return dist.TransformedDistribution(
            self.inner(h), [AffineTransform(0.0, 2.0, event_dim=1)], validate_args=False
        )


def test_sampled_means_repeat_whatever_the_global_random_state() -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,), guide=SampledMeanGuide(8, 3)), _x(10)
    torch.manual_seed(1)
    a = represent.encode(vae, x)
    torch.manual_seed(2)
    b = represent.encode(vae, x)
    np.testing.assert_array_equal(a["mean"], b["mean"])
    np.testing.assert_array_equal(a["scale"], b["scale"])
    assert int(a["scale_samples"]) == represent.SCALE_SAMPLES
    with torch.no_grad():
        loc, scale = vae.q.inner.loc_scale(vae.encoder(x))
    np.testing.assert_allclose(a["mean"], 2 * loc.numpy(), atol=0.8 * float(scale.max()))
    np.testing.assert_allclose(a["scale"], 2 * scale.numpy(), rtol=0.25)


def test_encode_refuses_bad_input_in_one_line(tmp_path) -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,)), _x()
    for call, error in [
        (lambda: represent.encode(vae, x, torch.zeros(29, dtype=torch.long)), DataError),
        (lambda: represent.encode(vae, x, torch.zeros(30, 2)), DataError),
        (lambda: represent.encode(vae, x, batch_size=0), ConfigError),
        (lambda: represent.encode(vae, torch.rand(5, 1, 3, 3)), DataError),
        (lambda: represent.encode(vae, x[:0]), DataError),
        (lambda: represent.encode(nn.Linear(2, 2), x), ConfigError),
        (lambda: represent.write_encoding({"mean": np.zeros(2)}, tmp_path / "z.csv"), ConfigError),
    ]:
        with pytest.raises(error) as info:
            call()
        assert "\n" not in str(info.value)


def test_write_encoding_round_trips_an_npz(tmp_path) -> None:
    vae, x = VAE(SHAPE, 3, hidden=(8,)), _x()
    enc = represent.encode(vae, x, torch.arange(30) % 3)
    path = represent.write_encoding(enc, tmp_path / "new" / "enc.npz")
    assert path == tmp_path / "new" / "enc.npz"
    with np.load(path) as back:
        assert set(back.files) == set(enc)
        for k, v in enc.items():
            np.testing.assert_array_equal(back[k], v)
    assert [p.name for p in path.parent.iterdir()] == ["enc.npz"]  # no temporary file left


# -- class-balanced subsets ----------------------------------------------------------------------
def test_balanced_subsets_are_balanced_nested_and_seeded() -> None:
    y = np.repeat(np.arange(4), [30, 40, 50, 60])
    order = represent.balanced_order(y, seed=3)
    assert sorted(order.tolist()) == list(range(y.size))
    for n in (4, 7, 10, 61, 120):
        counts = np.bincount(y[represent.balanced_subset(y, n, seed=3)], minlength=4)
        assert counts.sum() == n and counts.max() - counts.min() <= 1, (n, counts)
        assert (counts == n // 4 + 1).sum() == n % 4
        np.testing.assert_array_equal(represent.balanced_subset(y, n, seed=3), order[:n])
    # class 0 (30 examples) runs out: it gives all it has, the others share the rest evenly
    counts = np.bincount(y[represent.balanced_subset(y, 150, seed=3)], minlength=4)
    assert counts.tolist()[0] == 30 and counts[1:].max() - counts[1:].min() <= 1
    assert not np.array_equal(represent.balanced_order(y, seed=4), order)
    np.testing.assert_array_equal(represent.balanced_order(y, seed=3), order)
    for n in (3, 181):  # fewer than one per class; more than there are
        with pytest.raises(ConfigError):
            represent.balanced_subset(y, n)


# -- the probe on features ------------------------------------------------------------------------
def _separable(n: int, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose class is readable by construction: class c sits at 10 e_c, noise 0.5 around it.

    As many features as classes: with a feature of pure noise, standardising a subset of one
    example per class would blow the noise up to the signal's size."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    feats = 0.5 * rng.normal(size=(n, k))
    feats[np.arange(n), y] += 10.0
    return feats, y


def test_probe_reads_linearly_separable_classes_perfectly() -> None:
    xtr, ytr = _separable(600)
    xte, yte = _separable(300, seed=1)
    out = represent.logistic_probe(xtr, ytr, xte, yte, (5, 50, None))
    assert out == {"probe_accuracy_5": 1.0, "probe_accuracy_50": 1.0, "probe_accuracy_all": 1.0}


def test_probe_on_features_without_the_label_scores_chance() -> None:
    rng = np.random.default_rng(2)
    xtr, xte = rng.normal(size=(2000, 20)), rng.normal(size=(2000, 20))
    ytr, yte = rng.integers(0, 5, 2000), rng.integers(0, 5, 2000)
    out = represent.logistic_probe(xtr, ytr, xte, yte, (100, None))
    assert all(abs(v - 0.2) < 0.04 for v in out.values()), out


def test_probe_skips_sizes_the_training_set_cannot_supply_and_is_deterministic() -> None:
    xtr, ytr = _separable(50, k=5)
    xte, yte = _separable(40, seed=1)
    ytr[:] = np.arange(50) % 5
    out = represent.logistic_probe(xtr, ytr, xte, yte, (4, 5, 50, 51, None), seed=1)
    assert set(out) == {"probe_accuracy_5", "probe_accuracy_50", "probe_accuracy_all"}
    assert out == represent.logistic_probe(xtr, ytr, xte, yte, (4, 5, 50, 51, None), seed=1)
    # a different seed draws other subsets of 5 (with noisy features, another score is likely)
    noisy = xtr + np.random.default_rng(0).normal(scale=8.0, size=xtr.shape)
    scores = {
        represent.logistic_probe(noisy, ytr, xte, yte, (5,), seed=s)["probe_accuracy_5"]
        for s in range(6)
    }
    assert len(scores) > 1
    with pytest.raises(ConfigError):
        represent.logistic_probe(xtr, ytr, xte, yte, (0,))
    with pytest.raises(DataError):
        represent.logistic_probe(xtr, np.zeros(50), xte, yte)  # one class only


def test_probe_standardises_its_inputs() -> None:
    # rescaling a feature changes nothing once inputs are standardised (with L2 on raw inputs it
    # would: the penalty depends on each feature's units)
    rng = np.random.default_rng(0)
    xtr, ytr = _separable(300)
    xte, yte = _separable(300, seed=1)
    xtr, xte = (
        xtr + rng.normal(scale=6.0, size=xtr.shape),
        xte + rng.normal(scale=6.0, size=xte.shape),
    )
    units = np.array([1e-3, 1.0, 1e3, 1.0, 1e-2])
    plain = represent.logistic_probe(xtr, ytr, xte, yte, (20, None))
    scaled = represent.logistic_probe(xtr * units, ytr, xte * units, yte, (20, None))
    assert scaled == pytest.approx(plain, abs=1e-9) and plain["probe_accuracy_all"] < 1.0


def test_pixel_probe_flattens_images_and_names_its_keys() -> None:
    feats, y = _separable(200, k=4)
    images = torch.as_tensor(feats.reshape(200, 1, 2, 2), dtype=torch.float32)
    out = represent.pixel_probe(images[:150], y[:150], images[150:], y[150:], (8, None))
    assert out == {"pixel_probe_accuracy_8": 1.0, "pixel_probe_accuracy_all": 1.0}


class _Identity(nn.Module):
    """A "model" whose latent mean is its input: the probe then sees the features themselves."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_seen = 0

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        self.rows_seen += x.shape[0]
        return x


def test_linear_probe_on_a_separable_latent_and_a_chance_control() -> None:
    xtr, ytr = _separable(600)
    xte, yte = _separable(400, seed=1)
    xtr_t, xte_t = torch.as_tensor(xtr), torch.as_tensor(xte)
    model = _Identity()
    out = represent.linear_probe(model, xtr_t, ytr, xte_t, yte, (100, None))
    assert out == {"probe_accuracy_100": 1.0, "probe_accuracy_all": 1.0}
    model.rows_seen = 0  # without None, only the training examples of the largest subset
    represent.linear_probe(model, xtr_t, ytr, xte_t, yte, (10, 100))
    assert model.rows_seen == 100 + 400
    noise = torch.randn(2000, 5, dtype=torch.float64)  # a latent that knows nothing of the label
    y = np.random.default_rng(0).integers(0, 5, 2000)
    control = represent.linear_probe(_Identity(), noise[:1000], y[:1000], noise[1000:], y[1000:])
    assert all(abs(v - 0.2) < 0.06 for v in control.values()), control


# -- on a VAE trained on the bundled digits --------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    from pyro_vae import train

    config = RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(latent_dim=8, hidden=(64,)),
        train=TrainConfig(epochs=5, batch_size=128, seed=0, device="cpu"),
    )
    return train(config, tmp_path_factory.mktemp("digits"), progress=False)


def test_linear_probe_on_a_trained_vae_beats_chance(digits_run) -> None:
    model, d = digits_run.model, digits_run.dataset
    args = (model, d.train, d.train_labels, d.test, d.test_labels)
    out = represent.linear_probe(*args)
    assert set(out) == {"probe_accuracy_100", "probe_accuracy_1000", "probe_accuracy_all"}
    assert out["probe_accuracy_all"] > 0.5  # chance is 0.1
    assert out == represent.linear_probe(*args)
    rng = np.random.default_rng(0)
    control = represent.linear_probe(
        model, d.train, rng.permutation(d.train_labels.numpy()), d.test, d.test_labels, (None,)
    )
    assert control["probe_accuracy_all"] < 0.25
    pixels = represent.pixel_probe(d.train, d.train_labels, d.test, d.test_labels, (100,))
    assert pixels["pixel_probe_accuracy_100"] > 0.7


def test_report_adds_the_probe_only_with_training_and_test_labels(digits_run) -> None:
    model, d = digits_run.model, digits_run.dataset
    plain = evaluate.report(model, d.test, d.test_labels)
    assert not any(k.startswith("probe_") for k in plain)
    no_labels = evaluate.report(model, d.test, None, train_x=d.train, train_labels=d.train_labels)
    assert not any(k.startswith("probe_") for k in no_labels)
    out = evaluate.report(
        model,
        d.test,
        d.test_labels,
        train_x=d.train,
        train_labels=d.train_labels,
        probe_counts=(100, 5000, None),
    )
    assert {k for k in out if k.startswith("probe_")} == {
        "probe_accuracy_100",
        "probe_accuracy_all",
    }  # 5000 is more than the 1438 training images: skipped
    expected = represent.linear_probe(
        model, d.train, d.train_labels, d.test, d.test_labels, (100, None)
    )
    assert out["probe_accuracy_all"] == expected["probe_accuracy_all"]


def test_latent_kl_per_dim_is_latent_statistics_for_the_diagonal_guide(digits_run) -> None:
    model, x = digits_run.model, digits_run.dataset.test[:200]
    kl = represent.latent_kl_per_dim(model, x)
    expected = evaluate.latent_statistics(model, x, num_samples=1)["kl_per_dim"]
    np.testing.assert_allclose(kl, expected, rtol=1e-4, atol=1e-6)
