"""A trained run serves without its training data: every command that reads a model works from the
run directory alone, from the CLI and from Python; model objects pickle and copy cleanly; run files
follow the umask."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import stat

import numpy as np
import pyro
import pytest
import torch

import pyro_vae as pv
from pyro_vae.cli import main
from pyro_vae.errors import DataError

from .conftest import tiny_config


def _digits_npz(path, labels: bool = True) -> np.ndarray:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:600, None]
    if labels:
        np.savez(path, x=x, y=d.target[:600])
    else:
        np.savez(path, x=x)
    return x


@pytest.fixture(scope="module")
def npz_run(tmp_path_factory):
    """A run trained on an .npz file that is then deleted, and a copy of the data elsewhere."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "train.npz"
    x = _digits_npz(data)
    run = root / "run"
    argv = ["train", "--dataset", str(data), "--run-dir", str(run), "--epochs", "2"]
    assert main([*argv, "--latent-dim", "2", "--hidden", "16", "--quiet", "--no-plots"]) == 0
    other = root / "new.npz"
    np.savez(other, x=x[:50])
    data.unlink()
    return run, other


def test_every_serving_command_works_with_the_training_data_deleted(npz_run, tmp_path, capsys):
    run, other = npz_run
    new = str(other)
    commands = [
        ["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")],
        ["traverse", str(run), "--steps", "3", "--out", str(tmp_path / "t.png")],
        ["traverse", str(run), "--data", new, "--steps", "3", "--out", str(tmp_path / "ti.png")],
        ["reconstruct", str(run), "--data", new, "-n", "4", "--out", str(tmp_path / "r.png")],
        ["interpolate", str(run), "--data", new, "--out", str(tmp_path / "i.png")],
        ["encode", str(run), "--data", new, "--out", str(tmp_path / "e.npz")],
        ["score", str(run), "--data", new, "--nll-samples", "5", "--regret-steps", "0"],
        ["evaluate", str(run), "--data", new, "--nll-samples", "5", "--iwae-samples", "0"],
    ]
    for argv in commands:
        capsys.readouterr()
        assert main([*argv, "--quiet"]) == 0, (argv, capsys.readouterr().err)
    for name in ("s.png", "t.png", "ti.png", "r.png", "i.png", "e.npz"):
        assert (tmp_path / name).stat().st_size > 0
    # every row of a file that has no split of its own is encoded and scored, in its order
    assert np.load(tmp_path / "e.npz")["mean"].shape[0] == 50
    capsys.readouterr()
    assert main(["score", str(run), "--data", new, "--nll-samples", "5", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 50
    # --data-split still picks pyro-vae's split of it
    argv = ["score", str(run), "--data", new, "--data-split", "test", "--nll-samples", "5"]
    assert main([*argv, "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 10


def test_commands_that_need_the_run_data_say_so_in_one_line(npz_run, capsys):
    run, _ = npz_run
    capsys.readouterr()
    assert main(["evaluate", str(run), "--nll-samples", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs its training data" in err and "--data" in err


def test_traverse_without_the_data_draws_from_the_prior_and_says_so(npz_run, tmp_path, capsys):
    from pyro_vae import plots

    run, other = npz_run
    out = tmp_path / "t.png"
    capsys.readouterr()
    assert main(["traverse", str(run), "--steps", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no test image to traverse" in err and "prior's centre" in err
    assert out.stat().st_size > 0
    # the same rows as the Python traversal from the prior of the reloaded model
    _, model, _ = pv.load_run(run)
    v, rows, score = plots.traversal_latents(model, steps=3)
    assert rows == plots.kl_order(score) and torch.equal(v[:, 1], torch.zeros(2, 2))
    # an image asked for, with no data to take it from: refused, not drawn from the prior
    assert main(["traverse", str(run), "--image", "3", "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs its training data" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dims", "2"], "--dims must hold latent dimensions in 0..1, got 2"),
        (["--dims", "1", "1"], "--dims lists dimension 1 twice"),
        (["--dims", "1", "--max-dims", "1"], "give one of the two"),
        (["--max-dims", "0"], "--max-dims must be a positive integer"),
        (["--label", "1"], "has no labels"),
        (["--from-prior", "--data", "{new}"], "--data would not be used"),
        (["--from-prior", "--image", "1"], "--image would not be used"),
        (["--data", "{new}", "--image", "50"], "--image must lie in 0..49"),
        (["--dims", "x"], "invalid int value"),
    ],
)
def test_traverse_refuses_bad_options_in_one_line(npz_run, tmp_path, capsys, argv, message):
    run, other = npz_run
    argv = [a.format(new=other) for a in argv]
    capsys.readouterr()
    assert main(["traverse", str(run), *argv, "--out", str(tmp_path / "t.png"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "t.png").exists()


def test_traverse_dims_pick_the_rows_in_their_order(npz_run, tmp_path, capsys):
    from pyro_vae import plots

    run, _ = npz_run
    one, both = tmp_path / "one.png", tmp_path / "both.png"
    assert main(["traverse", str(run), "--dims", "1", "--out", str(one), "--quiet"]) == 0
    assert main(["traverse", str(run), "--dims", "1", "0", "--out", str(both), "--quiet"]) == 0
    import matplotlib.image as mpimg

    assert mpimg.imread(both).shape[0] > mpimg.imread(one).shape[0]  # two rows against one
    _, model, _ = pv.load_run(run)
    v, rows, _ = plots.traversal_latents(model, steps=5, dims=[1, 0])
    assert rows == [1, 0]
    quantiles = torch.distributions.Normal(0.0, 1.0).icdf(plots.traversal_probs(5)).float()
    torch.testing.assert_close(v[0, :, 1], quantiles)  # row 0 moves dimension 1 only
    assert torch.equal(v[0, :, 0], torch.zeros(5))


def test_a_label_model_traverses_from_the_run_alone(tmp_path, capsys):
    data = tmp_path / "d.npz"
    _digits_npz(data)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--run-dir", str(run), "--model", "cvae"]
    argv += ["--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--quiet", "--no-plots"]
    assert main(argv) == 0
    data.unlink()
    out = tmp_path / "t.png"
    capsys.readouterr()
    assert main(["traverse", str(run), "--steps", "3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "draws class 0 of 0..9 (--label K)" in err and out.stat().st_size > 0
    assert main(["traverse", str(run), "--label", "7", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["traverse", str(run), "--label", "10", "--out", str(out), "--quiet"]) == 2
    assert "--label must be a class in 0..9, got 10" in capsys.readouterr().err
    # from Python: the class's one-hot code next to z, z at the prior's centre but in its row
    from pyro_vae import plots

    _, model, _ = pv.load_run(run)
    v, rows, _ = plots.traversal_latents(model, steps=3, label=7)
    assert v.shape == (2, 3, 2 + 10)
    onehot = torch.nn.functional.one_hot(torch.tensor(7), 10).float()
    assert torch.equal(v[..., 2:], onehot.expand(2, 3, 10))
    assert torch.equal(v[0, :, 1 - rows[0]], torch.zeros(3))
    with pytest.raises(pv.ConfigError, match="label must be a class of this model"):
        plots.traversal_latents(model, label=10)


def test_load_run_serves_without_the_data(npz_run) -> None:
    run, other = npz_run
    config, model, data = pv.load_run(run)
    assert isinstance(data, pv.RunData)
    pyro.set_rng_seed(0)
    assert model.sample(4).shape == (4, 1, 8, 8)
    x = torch.as_tensor(np.load(other)["x"][:8])
    assert torch.isfinite(pv.log_likelihood(model, x, num_samples=5)).all()
    assert model.latent_mean(x).shape == (8, 2)
    # what each serving command does, from Python: every figure, the encoding, the scores
    from pyro_vae import plots, represent, scores

    assert np.isfinite(pv.elbo(model, x))
    assert represent.encode(model, x)["mean"].shape == (8, 2)
    table = scores.score(model, x, num_samples=5, regret_steps=0, scores=("elbo", "log_px"))
    assert np.isfinite(table["log_px"]).all() and table["elbo"].shape == (8,)
    out = run.parent / "py"
    out.mkdir(exist_ok=True)
    for path in (
        plots.samples(model, out / "s.png", n=4),
        plots.reconstructions(model, x, out / "r.png", n=4),
        plots.interpolation(model, x, out / "i.png", steps=3, pairs=2),
        plots.traversal(model, path=out / "t.png", steps=3),  # no data: from the prior
    ):
        assert path is not None and path.stat().st_size > 0
    with pytest.raises(DataError, match="needs its training data"):
        data.test  # noqa: B018


def test_a_run_trained_on_python_data_serves_from_the_cli(tmp_path, capsys) -> None:
    data = pv.load_dataset(pv.DataConfig("digits"))
    shifted = pv.Dataset("mine", data.train * 0.5, data.test * 0.5)
    pv.train(tiny_config(epochs=1), tmp_path / "run", progress=False, dataset=shifted)
    out = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "--out", str(out), "--quiet"]) == 0
    out = tmp_path / "t.png"  # its data cannot be loaded: the traversal from the prior
    assert main(["traverse", str(tmp_path / "run"), "--out", str(out), "--quiet"]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()
    # its own data it cannot find: the error says how to pass them
    assert main(["evaluate", str(tmp_path / "run"), "--nll-samples", "0", "--quiet"]) == 2
    assert "passed in Python" in capsys.readouterr().err
    # and it resumes in Python with them
    result = pv.train(
        tiny_config(epochs=2), tmp_path / "run", resume=True, progress=False, dataset=shifted
    )
    assert [r["epoch"] for r in result.history] == [1, 2]
    _, _, reloaded = pv.load_run(tmp_path / "run", dataset=shifted)
    assert torch.equal(reloaded.test, shifted.test)


def test_the_fingerprint_still_guards_the_runs_own_test_split(tmp_path, capsys) -> None:
    path = tmp_path / "d.npz"
    _digits_npz(path)
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(path), "--run-dir", str(run), "--epochs", "1", "--quiet"]
    assert main([*argv, "--no-plots", "--latent-dim", "2", "--hidden", "16"]) == 0
    x = np.load(path)["x"]
    np.savez(path, x=1 - x, y=np.load(path)["y"])  # the file changed on disk
    capsys.readouterr()
    assert main(["evaluate", str(run), "--nll-samples", "0", "--quiet"]) == 2
    assert "the data differ" in capsys.readouterr().err
    argv = ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--quiet", "--no-plots"]
    assert main(argv) == 2
    assert "the data differ" in capsys.readouterr().err
    # sampling does not read the data at all
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png"), "--quiet"]) == 0


def _log_px(model, x) -> torch.Tensor:
    pyro.set_rng_seed(0)
    return pv.log_likelihood(model, x, num_samples=20)


@pytest.mark.parametrize("name", sorted(pv.MODELS.names()))
def test_models_pickle_deepcopy_and_torch_save_to_the_same_log_px(name) -> None:
    config = tiny_config(epochs=1).replace(model={"model": name})
    model = pv.build_model(config.model, (1, 8, 8), 10)
    x = pv.load_dataset(config.data).test[:16]
    _log_px(model, x)  # once through Pyro's parameter store, which marks the parameters
    before = _log_px(model, x)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    copies = [
        pickle.loads(pickle.dumps(model)),
        copy.deepcopy(model),
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=False),
    ]
    for other in copies:
        assert type(other) is type(model) and other.name != model.name
        assert torch.equal(_log_px(other, x), before)
    # a copy is its own model: changing it leaves the original alone (in Pyro's global parameter
    # store a copy under the original's name would read the original's parameters)
    with torch.no_grad():
        for p in copies[0].parameters():
            p.add_(0.5)
    assert torch.equal(_log_px(model, x), before)
    assert not torch.equal(_log_px(copies[0], x), before)


def test_run_files_follow_the_umask(tmp_path) -> None:
    from pyro_vae.scores import write_table

    old = os.umask(0o022)
    try:
        pv.train(tiny_config(epochs=1), tmp_path / "run", progress=False)
        write_table({"log_px": np.zeros(3)}, tmp_path / "run" / "scores.csv")
    finally:
        os.umask(old)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl", "scores.csv"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o644, (name, oct(mode))


def test_serving_commands_import_only_what_they_use(npz_run, tmp_path) -> None:
    # not a timing test (benchmarks/bench_serve.py times them): which libraries a fresh process
    # imports to sample and to encode, where torchvision's model zoo, torch._dynamo and
    # scikit-learn cost seconds each
    import subprocess
    import sys

    from .conftest import REPO

    run, other = npz_run
    script = (
        "import sys\n"
        "from pyro_vae.cli import main\n"
        "assert main(sys.argv[1:]) == 0\n"
        "heavy = ('torchvision', 'torch._dynamo', 'sklearn', 'lightning', 'lightning_fabric')\n"
        "drawn = ('matplotlib',) if sys.argv[1] == 'encode' else ()\n"
        "found = [m for m in heavy + drawn if m in sys.modules]\n"
        "assert not found, found\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (
        ["sample", str(run), "-n", "16", "--out", str(tmp_path / "s.png")],
        ["encode", str(run), "--data", str(other), "--out", str(tmp_path / "e.npz")],
        ["traverse", str(run), "--steps", "3", "--out", str(tmp_path / "t.png")],
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, *argv, "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]


def test_a_run_written_before_the_data_spec_loads_through_its_data(tmp_path) -> None:
    pv.train(tiny_config(epochs=1), tmp_path / "run", progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["data_spec"]["shape"] == [1, 8, 8] and ckpt["data_spec"]["num_classes"] == 10
    del ckpt["data_spec"]
    torch.save(ckpt, path)
    _, model, _ = pv.load_run(tmp_path / "run")  # the digits say what shape to build
    assert model.x_shape == (1, 8, 8)
    ckpt["data_spec"] = {"shape": [1, 0, 8], "num_classes": None}
    torch.save(ckpt, path)
    with pytest.raises(pv.CheckpointError, match="data_spec"):
        pv.load_run(tmp_path / "run")
    # an entry missing from the spec is damage too (None, no labels, is a value of its own)
    ckpt["data_spec"] = {"shape": [1, 8, 8]}
    torch.save(ckpt, path)
    with pytest.raises(pv.CheckpointError, match="data_spec"):
        pv.load_run(tmp_path / "run")
    # and so is any entry of another type than pyro-vae writes
    for key, junk in (("from_python", torch.ones(3)), ("name", 3), ("test_size", -1)):
        spec = {"shape": [1, 8, 8], "num_classes": 10, "from_python": False, key: junk}
        ckpt["data_spec"] = spec
        torch.save(ckpt, path)
        with pytest.raises(pv.CheckpointError, match="data_spec"):
            pv.load_run(tmp_path / "run")
