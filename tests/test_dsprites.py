"""The rendered dSprites: the grid, its order and its factor values exact; the factor data sets."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pyro_vae import dsprites
from pyro_vae.build import validate
from pyro_vae.config import DataConfig, RunConfig
from pyro_vae.data import load_dataset
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.factors import FactorDataset


def test_grid_is_every_combination_once_in_deepminds_order():
    f = dsprites.factors_of(np.arange(dsprites.NUM_IMAGES))
    assert dsprites.NUM_IMAGES == 737_280 == 3 * 6 * 40 * 32 * 32
    # DeepMind's order: pos_y fastest, then pos_x, orientation, scale, shape (itertools.product)
    sizes = (3, 6, 40, 32, 32)
    for i in (0, 1, 31, 32, 1023, 1024, 40 * 1024, 6 * 40 * 1024, 737_279, 123_457):
        expect = next(itertools.islice(itertools.product(*map(range, sizes)), i, None))
        assert tuple(f[i]) == expect
    assert len(np.unique(dsprites.index_of(f))) == dsprites.NUM_IMAGES
    assert (dsprites.index_of(f) == np.arange(dsprites.NUM_IMAGES)).all()


def test_factor_values_are_deepminds():
    v = dsprites.FACTOR_VALUES
    assert dsprites.FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert np.allclose(v[1], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert v[2][0] == 0.0 and v[2][-1] == pytest.approx(2 * math.pi) and len(v[2]) == 40
    assert np.allclose(np.diff(v[2]), 2 * math.pi / 39)
    assert v[3][0] == 0 and v[3][-1] == 1 and np.allclose(np.diff(v[3]), 1 / 31)
    assert (v[3] == v[4]).all()


def test_images_binary_deterministic_inside_the_frame_and_moving_with_their_factors():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, dsprites.NUM_IMAGES, 300)
    x = dsprites.render(dsprites.factors_of(idx))
    assert x.shape == (300, 64, 64) and set(np.unique(x)) <= {0, 1}
    assert (x == dsprites.render(dsprites.factors_of(idx))).all()
    assert x.reshape(300, -1).sum(1).min() > 20  # never empty
    edge = x[:, 0].sum() + x[:, -1].sum() + x[:, :, 0].sum() + x[:, :, -1].sum()
    assert edge == 0  # every shape inside the frame
    base = np.array([[2, 3, 7, 10, 20]])
    img = dsprites.render(base)[0]
    ys, xs = np.nonzero(img)
    for j, axis in ((3, xs), (4, ys)):  # one position step moves the centre by 40/31 px
        moved = base.copy()
        moved[0, j] += 5
        my, mx = np.nonzero(dsprites.render(moved)[0])
        shift = (mx if j == 3 else my).mean() - axis.mean()
        assert shift == pytest.approx(5 * 40 / 31, abs=0.3)
    # a bigger scale, a bigger shape (area grows as scale^2)
    small, big = dsprites.render(np.array([[1, 0, 0, 16, 16], [1, 5, 0, 16, 16]]))
    assert big.sum() / small.sum() == pytest.approx(4.0, rel=0.15)
    # the three shapes differ; the square repeats after a quarter turn (orientation 0 vs 2pi)
    shapes = dsprites.render(np.array([[s, 5, 3, 16, 16] for s in range(3)]))
    assert (shapes[0] != shapes[1]).any() and (shapes[1] != shapes[2]).any()
    a, b = dsprites.render(np.array([[0, 5, 0, 16, 16], [0, 5, 39, 16, 16]]))
    assert (a != b).sum() <= 4


def test_dsprites_data_set_option_split_and_factor_sampler():
    c = validate(
        RunConfig(
            data=DataConfig(dataset="dsprites", dataset_options={"size": "300", "test_size": "100"})
        )
    )
    ds = load_dataset(c.data)
    assert tuple(ds.train.shape) == (300, 1, 64, 64) and tuple(ds.test.shape) == (100, 1, 64, 64)
    f = ds.factors.test_factors
    # the test images are those their factor labels render
    assert (ds.test[:, 0].numpy() == dsprites.render(f)).all()
    source = ds.factors.source
    rng = np.random.default_rng(1)
    g = source.sample_factors(7, rng)
    assert (source.factors[source.index_of(g)] == g).all()
    with pytest.raises(ConfigError, match="takes no option 'sz'"):
        validate(RunConfig(data=DataConfig(dataset="dsprites", dataset_options={"sz": 3})))
    with pytest.raises(ConfigError, match="size must lie"):
        load_dataset(DataConfig(dataset="dsprites", dataset_options={"size": 10**7}))
    with pytest.raises(ConfigError, match="takes no"):
        validate(RunConfig(data=DataConfig(dataset="digits", dataset_options={"size": 3})))


def test_npz_with_factors(tmp_path):
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 3, 200), rng.integers(0, 4, 200)], 1)
    x = rng.random((200, 5)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, factors=factors, factor_names=np.array(["a", "b"]))
    ds = load_dataset(DataConfig(dataset=str(tmp_path / "d.npz")))
    split = ds.factors
    assert split.factor_names == ("a", "b") and split.factor_sizes == (3, 4)
    # the test factors label the test rows
    rows = [np.nonzero((x == t.numpy()).all(1))[0][0] for t in ds.test]
    assert (factors[rows] == split.test_factors).all()
    got = split.source.sample_observations(factors[:5], rng)
    assert (split.source.factors[split.source.index_of(factors[:5])] == factors[:5]).all()
    assert got.shape == (5, 5)
    np.savez(tmp_path / "bad.npz", x_train=x, x_test=x, factors=factors)
    with pytest.raises(DataError, match="'factors' label the rows of 'x'"):
        load_dataset(DataConfig(dataset=str(tmp_path / "bad.npz")))
    with pytest.raises(DataError, match="no datum carries"):
        FactorDataset(np.array([[0, 0], [1, 1]]), x=x[:2]).index_of(np.array([[0, 1]]))
    with pytest.raises(DataError, match="negative"):
        FactorDataset(np.array([[0, -1]]))
