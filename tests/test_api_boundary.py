"""The public Python functions check their arguments as the CLI does: one-line PyroVAEError
subclasses for wrong types, dtypes, shapes, empty or non-finite data, and data outside the
likelihood's support; float64, integer and NumPy data are converted to float32 by a stated rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import pyro_vae as pv
from pyro_vae import ConfigError, DataError, PyroVAEError
from pyro_vae.models import VAE


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    return pv.build_model(pv.ModelConfig(latent_dim=2, hidden=(8,)), (1, 4, 4), None)


def x01(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 4, 4)


def _one_line(call, kind=PyroVAEError, match: str | None = None) -> str:
    with pytest.raises(kind, match=match) as e:
        call()
    assert str(e.value) and "\n" not in str(e.value)
    return str(e.value)


BAD_DATA = {
    "1-D": (torch.rand(16), "has shape (16,)"),
    "one datum": (torch.rand(1, 4, 4), "one datum"),
    "flat": (torch.rand(5, 16), "reshape it: x.reshape(-1, 1, 4, 4)"),
    "empty": (torch.rand(0, 1, 4, 4), "is empty"),
    "nan": (torch.full((2, 1, 4, 4), float("nan")), "NaN"),
    "out of support": (torch.rand(3, 1, 4, 4) + 1.0, "needs data in [0, 1]"),
    "8-bit integers": (torch.randint(0, 256, (3, 1, 4, 4)), "needs data in [0, 1]"),
    "list": ([[0.5] * 16], "must be a torch.Tensor or a NumPy array"),
    "string": ("x", "must be a torch.Tensor or a NumPy array"),
    "None": (None, "got NoneType"),
    "complex": (torch.rand(2, 1, 4, 4, dtype=torch.complex64), "complex"),
    "numpy strings": (np.array([["a"] * 16]), "dtype <U1"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
@pytest.mark.parametrize("fn", ["log_likelihood", "elbo", "encode", "latent_statistics"])
def test_bad_data_is_one_line(vae, fn, case) -> None:
    from pyro_vae.evaluate import latent_statistics
    from pyro_vae.represent import encode

    x, message = BAD_DATA[case]
    call = {
        "log_likelihood": lambda: pv.log_likelihood(vae, x, 4),
        "elbo": lambda: pv.elbo(vae, x),
        "encode": lambda: encode(vae, x),
        "latent_statistics": lambda: latent_statistics(vae, x, 2),
    }[fn]
    assert message in _one_line(call, DataError)


def test_nan_and_out_of_support_never_give_a_number(vae) -> None:
    """The issue's cases: NaN images gave NaN, data outside [0, 1] a positive log p(x)."""
    bad = x01(3)
    bad[0, 0, 0, 0] = float("nan")
    _one_line(lambda: pv.log_likelihood(vae, bad, 4), DataError)
    _one_line(lambda: pv.log_likelihood(vae, x01(3) * 300, 4), DataError, "in \\[0, 1\\]")


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: x.double(),
        lambda x: x.half(),
        lambda x: x.numpy(),
        lambda x: x.numpy().astype(np.float64),
        lambda x: x.round().long(),  # 0/1 integers: binary data, not rescaled
        lambda x: x.round().bool(),
    ],
)
def test_other_dtypes_and_numpy_are_converted_to_float32(vae, convert) -> None:
    x = x01(4)
    if convert(x).dtype in (torch.int64, torch.bool, np.int64):
        x = x.round()
    ref = pv.log_likelihood(vae, x.float(), 8, batch_size=2)
    torch.manual_seed(0)
    got = pv.log_likelihood(vae, convert(x), 8, batch_size=2)
    assert got.dtype == torch.float32 and got.shape == (4,)
    torch.manual_seed(0)
    again = pv.log_likelihood(vae, x.float() if x.dtype != torch.float16 else x, 8, batch_size=2)
    assert torch.isfinite(got).all() and torch.isfinite(ref).all()
    if convert(x).dtype not in (torch.float16,):
        assert torch.allclose(got, again)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5", None])
def test_counts_are_whole_positive_numbers(vae, bad) -> None:
    _one_line(lambda: pv.log_likelihood(vae, x01(), bad), ConfigError)
    _one_line(lambda: pv.elbo(vae, x01(), num_particles=bad), ConfigError)
    _one_line(lambda: pv.log_likelihood(vae, x01(), 4, batch_size=bad), ConfigError)


@pytest.mark.parametrize("model", [None, "vae", 3, object()])
def test_not_a_model_is_one_line(model) -> None:
    _one_line(lambda: pv.log_likelihood(model, x01(), 4), ConfigError)
    _one_line(lambda: pv.elbo(model, x01()), ConfigError)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((3,), {}, "train() trains a model object, a model's name"),
        (({"model": {"hidden": [0]}},), {}, "got a dict"),
        ((pv.RunConfig(), [torch.rand(4, 2)]), {}, "data must be a pv.Dataset"),
        ((), {"config": pv.RunConfig(model=pv.ModelConfig(hidden=(0,)))}, "hidden"),
        ((), {"model": "vae"}, "model must be a torch.nn.Module"),
        ((), {"model": torch.nn.Linear(2, 2)}, "has no model(x) method"),
        ((), {"dataset": [torch.rand(4, 2)]}, "dataset must be a pyro_vae.Dataset"),
        ((), {"dataset": "digits"}, "dataset must be a pyro_vae.Dataset"),
        ((), {"run_dir": 3}, "run_dir must be a path"),
        ((), {"resume": "yes"}, "resume must be True or False"),
    ],
)
def test_train_arguments(args, kwargs, message) -> None:
    kwargs = {"progress": False, **kwargs}
    assert message in _one_line(lambda: pv.train(*args, **kwargs))


@pytest.mark.parametrize("run_dir", [None, 3, ["runs"], b"\xff"])
def test_load_run_arguments(run_dir) -> None:
    _one_line(lambda: pv.load_run(run_dir), PyroVAEError)


def test_load_run_of_a_missing_directory(tmp_path) -> None:
    _one_line(lambda: pv.load_run(tmp_path / "none"), pv.CheckpointError, "no run directory")


def test_scores_refuse_bad_data(vae) -> None:
    from pyro_vae import scores

    for x in (torch.rand(0, 1, 4, 4), torch.rand(3, 16), x01(3) + 2):
        _one_line(lambda x=x: scores.score(vae, x, num_samples=2, scores=("elbo",)), DataError)
