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
