"""Figures (pyro_vae.plots): the latent traversal, and draw_all writing it."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from pyro_vae import ConfigError, Dataset, plots, represent
from pyro_vae.models import VAE, HierarchicalVAE, StackedM2
from pyro_vae.models.cvae import CVAE
from pyro_vae.models.m2 import M2

SHAPE = (1, 4, 4)


def _x(n: int = 40) -> torch.Tensor:
    return torch.rand(n, *SHAPE).round()


def _model(name: str) -> torch.nn.Module:
    return {
        "vae": lambda: VAE(SHAPE, 5, hidden=(8,)),
        "hvae": lambda: HierarchicalVAE(SHAPE, 5, hidden=(8,)),
        "cvae": lambda: CVAE(SHAPE, 3, latent_dim=5, hidden=(8,)),
        "m2": lambda: M2(SHAPE, 3, latent_dim=5, hidden=(8,)),
        "m1m2": lambda: StackedM2(SHAPE, 3, latent_dim=4, latent_dim2=5, hidden=(8,)),
        "iaf-mixture": lambda: VAE(SHAPE, 5, hidden=(8,), guide="iaf", prior="mixture"),
    }[name]()


def test_kl_order_is_by_decreasing_kl_ties_by_index() -> None:
    kl = [0.1, 2.0, 0.0, 2.0, 0.5]
    assert plots.kl_order(kl) == [1, 3, 4, 0, 2]
    assert plots.kl_order(kl, max_dims=2) == [1, 3]
    assert plots.kl_order(np.array(kl), max_dims=10) == [1, 3, 4, 0, 2]


def test_traversal_probs_span_the_central_90_percent() -> None:
    p = plots.traversal_probs(9)
    assert p[0] == pytest.approx(0.05) and p[-1] == pytest.approx(0.95)
    assert bool((p.diff() > 0).all()) and p.shape == (9,)
    assert plots.traversal_probs(1).tolist() == [0.5]


@pytest.mark.parametrize("name", ["vae", "hvae", "cvae", "m2", "m1m2", "iaf-mixture"])
def test_traversal_writes_one_row_per_dimension_by_kl(name, tmp_path) -> None:
    model, x = _model(name), _x()
    images, rows, kl = plots.traversal_images(model, x, image=2, steps=7, max_dims=3)
    assert images.shape == (3, 7, *SHAPE)
    assert len(kl) == 5 and rows == plots.kl_order(kl, 3)
    assert list(kl[rows]) == sorted(kl[rows], reverse=True)
    path = plots.traversal(model, x, tmp_path / "t.png", image=2, steps=7, max_dims=3)
    assert path == tmp_path / "t.png"
    png = mpimg.imread(path)
    assert png.ndim == 3 and png.shape[2] in (3, 4) and png.shape[1] > png.shape[0]


def test_traversal_grid_holds_every_dimension_when_max_dims_allows(tmp_path) -> None:
    model, x = _model("vae"), _x()
    images, rows, _ = plots.traversal_images(model, x, steps=4, max_dims=10)
    assert images.shape == (5, 4, *SHAPE) and sorted(rows) == [0, 1, 2, 3, 4]
    tall = mpimg.imread(plots.traversal(model, x, tmp_path / "tall.png", steps=4))
    short = mpimg.imread(plots.traversal(model, x, tmp_path / "short.png", steps=4, max_dims=1))
    assert tall.shape[0] > short.shape[0]  # five rows of images against one


def test_columns_are_the_normal_priors_quantiles_in_the_traversed_coordinate() -> None:
    model, x = _model("vae"), _x()
    v, rows, _ = plots.traversal_latents(model, x, image=1, steps=9)
    model.eval()
    base = model.latent_mean(x[1:2]).detach()[0]
    expected = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.05, 0.95, 9))
    for r, d in enumerate(rows):
        torch.testing.assert_close(v[r, :, d], expected)
        assert bool((v[r, :, d].diff() > 0).all())
        others = [i for i in range(5) if i != d]
        torch.testing.assert_close(v[r][:, others], base[others].expand(9, 4))


def test_other_priors_use_the_empirical_quantiles_of_prior_draws() -> None:
    model, x = _model("iaf-mixture"), _x()
    v, rows, _ = plots.traversal_latents(model, x, steps=5, dims=[3, 0])
    assert rows == [3, 0]  # given dims keep their order
    draws = represent.prior_draws(model, 2000, seed=0)
    probs = torch.linspace(0.05, 0.95, 5, dtype=torch.float64)
    expected = torch.quantile(draws.double(), probs, dim=0).float()
    for r, d in enumerate(rows):
        torch.testing.assert_close(v[r, :, d], expected[:, d])
        assert bool((v[r, :, d].diff() > 0).all())


def test_label_models_traverse_only_z_with_their_predicted_label() -> None:
    model, x = _model("m2"), _x()
    v, rows, kl = plots.traversal_latents(model, x, image=4, steps=3)
    assert v.shape == (5, 3, 5 + 3) and len(kl) == 5 and max(rows) < 5
    model.eval()
    onehot = torch.nn.functional.one_hot(model.predict(x[4:5]), 3).float()[0]
    torch.testing.assert_close(v[..., 5:], onehot.expand(5, 3, 3))


def test_hierarchical_traversal_moves_z1_against_its_marginal_prior() -> None:
    model, x = _model("hvae"), _x()
    assert not represent.prior_is_standard_normal(model)  # z1's prior is p(z2) p(z1|z2)
    v, rows, _ = plots.traversal_latents(model, x, steps=5)
    assert v.shape == (5, 5, 5)  # z1 has 5 dimensions, z2 2
    draws = represent.prior_draws(model, 2000, seed=0)
    expected = torch.quantile(draws.double(), torch.linspace(0.05, 0.95, 5).double(), dim=0)
    torch.testing.assert_close(v[0, :, rows[0]], expected[:, rows[0]].float())


def test_traversal_is_none_for_data_that_are_not_images(tmp_path) -> None:
    model = VAE((5,), 3, hidden=(8,))
    x = torch.rand(20, 5).round()
    assert plots.traversal(model, x, tmp_path / "t.png") is None
    assert not (tmp_path / "t.png").exists()


def test_traversal_refuses_bad_options_in_one_line(tmp_path) -> None:
    model, x = _model("vae"), _x(10)
    for options in [
        {"image": 10},
        {"image": -1},
        {"steps": 0},
        {"max_dims": 0},
        {"dims": [5]},
        {"dims": [1, 1]},
        {"dims": []},
    ]:
        with pytest.raises(ConfigError) as info:
            plots.traversal(model, x, tmp_path / "t.png", **options)
        assert "\n" not in str(info.value), options


def test_traversal_restores_the_models_mode_and_repeats() -> None:
    from tests.test_represent import SampledMeanGuide  # latent_mean from draws of q

    model, x = VAE(SHAPE, 5, hidden=(8,), guide=SampledMeanGuide(8, 5), prior="mixture"), _x()
    model.train()
    torch.manual_seed(1)
    a = plots.traversal_images(model, x, steps=3)[0]
    torch.manual_seed(2)
    b = plots.traversal_images(model, x, steps=3)[0]
    assert model.training and torch.equal(a, b)


def test_draw_all_writes_the_traversal(tmp_path) -> None:
    x = _x(60)
    data = Dataset("tiny", x[:40], x[40:], torch.arange(40) % 3, torch.arange(20) % 3, 3)
    written = plots.draw_all(_model("cvae"), data, [], tmp_path)
    assert tmp_path / "figures" / "traversal.png" in written
    assert mpimg.imread(tmp_path / "figures" / "traversal.png").shape[0] > 0


def test_draw_all_skips_the_traversal_with_a_warning_for_a_model_without_encode(tmp_path) -> None:
    model = _model("vae")
    model.encode = None  # a model that cannot say what q(z|x) is: no KL to order rows by
    x = _x(60)
    data = Dataset("tiny", x[:40], x[40:])
    with pytest.warns(UserWarning, match="no latent traversal"):
        written = plots.draw_all(model, data, [], tmp_path)
    assert tmp_path / "figures" / "reconstructions.png" in written
    assert not (tmp_path / "figures" / "traversal.png").exists()


def test_make_grid_lays_out_images_as_torchvision_does() -> None:
    # plots draws its grids itself (torchvision's import costs seconds); same layout, same pixels
    tv = pytest.importorskip("torchvision.utils")
    from pyro_vae.images import make_grid

    for shape, nrow in [
        ((5, 1, 8, 8), 3),
        ((16, 3, 4, 6), 4),
        ((1, 1, 2, 2), 8),
        ((7, 1, 3, 3), 7),
    ]:
        x = torch.rand(shape)
        assert torch.equal(make_grid(x, nrow), tv.make_grid(x, nrow=nrow, padding=1, pad_value=1.0))


# -- the traversal from the prior (no data) ---------------------------------------------------------
def test_prior_traversal_starts_at_zero_for_a_standard_normal_prior() -> None:
    model = _model("vae")
    assert torch.equal(represent.prior_centre(model), torch.zeros(5, dtype=torch.float64))
    v, rows, _ = plots.traversal_latents(model, steps=9)
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(plots.traversal_probs(9)).float()
    for r, d in enumerate(rows):
        others = [i for i in range(5) if i != d]
        assert torch.equal(v[r][:, others], torch.zeros(9, 4))  # exactly the prior's median
        torch.testing.assert_close(v[r, :, d], quantiles)
    assert torch.equal(v[:, 4, :], torch.zeros(5, 5))  # the middle column is the centre itself


def test_decoder_sensitivity_matches_a_hand_computation_and_is_zero_for_an_unused_dim() -> None:
    model = _model("vae")
    with torch.no_grad():
        model.decoder.net[0].weight[:, 3] = 0.0  # the decoder ignores dimension 3
        model.decoder.net[0].weight[:, 1] *= 10.0  # and reads dimension 1 strongly
    score = represent.decoder_sensitivity(model)
    assert score[3] == 0.0 and score.argmax() == 1
    # by hand: the RMS change of sigmoid(decoder(z)) from the image at z = 0 as z_d moves over
    # the N(0, 1) quantiles at 5%, ..., 95%
    probs = torch.linspace(0.05, 0.95, 9, dtype=torch.float64)
    q = torch.distributions.Normal(0.0, 1.0).icdf(probs).float()
    with torch.no_grad():
        centre = torch.sigmoid(model.decoder.net(torch.zeros(1, 5)))
        for d in range(5):
            z = torch.zeros(9, 5)
            z[:, d] = q
            expected = (torch.sigmoid(model.decoder.net(z)) - centre).pow(2).mean().sqrt()
            assert score[d] == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    _, rows, got = plots.traversal_latents(model, max_dims=5)
    assert rows == plots.kl_order(score) and rows[-1] == 3 and np.array_equal(got, score)


def test_prior_traversal_of_other_priors_starts_at_the_median_of_prior_draws() -> None:
    for name in ("hvae", "iaf-mixture"):
        model = _model(name)
        v, rows, _ = plots.traversal_latents(model, steps=3, dims=[0])
        draws = represent.prior_draws(model, 2000, seed=0).double()
        median = torch.quantile(draws, torch.tensor([0.5], dtype=torch.float64), dim=0)[0]
        torch.testing.assert_close(v[0, 0, 1:], median[1:].float())


def test_prior_traversal_of_a_label_model_sets_the_class() -> None:
    model = _model("m2")
    v, rows, _ = plots.traversal_latents(model, steps=3)  # class 0 by default
    assert v.shape == (5, 3, 5 + 3)
    assert torch.equal(v[..., 5:], torch.tensor([1.0, 0, 0]).expand(5, 3, 3))
    v2, _, score2 = plots.traversal_latents(model, steps=3, label=2)
    assert torch.equal(v2[..., 5:], torch.tensor([0, 0, 1.0]).expand(5, 3, 3))
    # the decoded images depend on the class: the rows' order is measured at that class
    assert not np.array_equal(score2, represent.decoder_sensitivity(model, label=0))


def test_prior_traversal_draws_from_python_without_data(tmp_path) -> None:
    for name in ("vae", "cvae", "hvae"):
        path = plots.traversal(_model(name), path=tmp_path / f"{name}.png", steps=3)
        assert path == tmp_path / f"{name}.png" and mpimg.imread(path).shape[0] > 0
    assert plots.traversal(VAE((5,), 3, hidden=(8,)), path=tmp_path / "flat.png") is None


def test_prior_traversal_refuses_options_it_would_not_use(tmp_path) -> None:
    model, x = _model("vae"), _x(10)
    cases = [
        (dict(image=0), "image=0 reads the data x, and none were given"),
        (dict(kl_points=50), "kl_points=50 reads the data x"),
        (dict(label=1), "VAE is not conditioned on labels"),
        (dict(x=x, label=1), "label=1 sets the class of a traversal from the prior"),
        (dict(x=x.numpy()), "x must be a torch.Tensor"),
        (dict(dims=[5]), "dims must hold latent dimensions in 0..4, got 5"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            plots.traversal_latents(model, **options)
    for label in (3, -1, True, 1.0):
        with pytest.raises(ConfigError, match="label must be a class of this model"):
            plots.traversal_latents(_model("cvae"), label=label)
    with pytest.raises(ConfigError, match="path="):
        plots.traversal(model)
