"""Bundles: pyro-vae export / pv.export write weights (safetensors), architecture, model card and
optionally ONNX graphs; pv.load rebuilds the model in a fresh process from the bundle alone."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

import pyro_vae as pv
from pyro_vae.cli import main

from .conftest import REPO, tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export") / "run"
    argv = ["train", "--run-dir", str(path), "--epochs", "2", "--latent-dim", "3"]
    assert main([*argv, "--hidden", "32", "--quiet", "--no-plots"]) == 0
    return path


def test_a_bundle_loads_in_a_fresh_process_elsewhere_and_samples_the_runs_images(run, tmp_path):
    bundle = tmp_path / "bundle"
    assert main(["export", str(run), str(bundle), "--quiet"]) == 0
    assert {p.name for p in bundle.iterdir()} == {"model.safetensors", "model.json", "README.md"}
    _, model, _ = pv.load_run(run)
    pyro.set_rng_seed(7)
    expected = model.sample(16).detach().numpy()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import sys, numpy, pyro, pyro_vae\n"
        "model = pyro_vae.load(sys.argv[1])\n"
        "pyro.set_rng_seed(7)\n"
        "numpy.save(sys.argv[2], model.sample(16).detach().numpy())\n"
        "banned = [m for m in ('onnx', 'onnxruntime', 'matplotlib', 'torchvision') "
        "if m in sys.modules]\n"
        "assert not banned, banned\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = elsewhere / "samples.npy"
    subprocess.run(
        [sys.executable, "-c", script, str(bundle.resolve()), str(out)],
        cwd=elsewhere,
        env=env,
        check=True,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(out), expected)


def test_the_bundle_describes_the_model_and_its_training(run, tmp_path):
    bundle = pv.export(run, tmp_path / "b")
    info = json.loads((bundle / "model.json").read_text())
    assert info["architecture"]["model"]["latent_dim"] == 3
    assert info["architecture"]["model"]["hidden"] == [32]
    assert info["architecture"]["x_shape"] == [1, 8, 8]
    assert info["likelihood"]["name"] == "bernoulli"
    assert info["data"]["name"] == "digits" and info["data"]["test_size"] > 0
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert info["trained"]["metrics"]["test_elbo"] == history[-1]["test_elbo"]
    card = (bundle / "README.md").read_text()
    assert f"{history[-1]['test_elbo']:.3f}" in card
    assert "pyro-vae train --latent-dim 3 --hidden 32 --epochs 2" in card
    assert "digits" in card and "pyro_vae.load" in card


def test_export_from_python_a_model_or_a_train_result(tmp_path):
    result = pv.train(tiny_config(epochs=1), progress=False)
    for source, where in ((result, "r"), (result.model, "m")):
        bundle = pv.export(source, tmp_path / where)
        loaded = pv.load(bundle)
        a = dict(result.model.state_dict())
        assert all(torch.equal(a[k], v) for k, v in loaded.state_dict().items())
    x = result.dataset.test[:8]
    pyro.set_rng_seed(0)
    want = pv.log_likelihood(result.model, x, num_samples=10)
    pyro.set_rng_seed(0)
    assert torch.equal(pv.log_likelihood(loaded, x, num_samples=10), want)


def test_export_refuses_a_non_empty_directory_and_a_damaged_bundle(run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(run), str(taken)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"
    bundle = pv.export(run, tmp_path / "b")
    weights = bundle / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(pv.CheckpointError, match="cannot read the weights"):
        pv.load(bundle)
    with pytest.raises(pv.CheckpointError, match="no bundle"):
        pv.load(tmp_path)


def test_overwrite_replaces_only_an_earlier_bundle_never_a_run_or_other_work(run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "outer" / "run"
    shutil.copytree(run, copy)
    before = sorted(p.name for p in copy.iterdir())
    for destination in (copy, copy.parent, tmp_path):  # the run, its folder, an ancestor
        capsys.readouterr()
        assert main(["export", str(copy), str(destination), "--overwrite"]) == 2
        assert "only replaces an earlier bundle" in capsys.readouterr().err
    assert sorted(p.name for p in copy.iterdir()) == before
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "model.json").write_text("{}")
    (notes / "mine.txt").write_text("mine")
    assert main(["export", str(copy), str(notes), "--overwrite"]) == 2
    assert (notes / "mine.txt").read_text() == "mine"
    bundle = pv.export(copy, tmp_path / "bundle")
    again = pv.export(copy, bundle, overwrite=True, name="again")  # an earlier bundle: replaced
    assert json.loads((again / "model.json").read_text())["name"] == "again"


def test_bundle_files_follow_the_umask(run, tmp_path):
    old = os.umask(0o027)
    try:
        bundle = pv.export(run, tmp_path / "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o750
    for path in bundle.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"guide": "lowrank", "likelihood": "gaussian"},
        {"likelihood": "continuous-bernoulli", "network": "conv"},
    ],
)
def test_onnx_graphs_equal_torch_to_1e_5(tmp_path, options):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    config = tiny_config(epochs=1).replace(model=options)
    result = pv.train(config, progress=False)
    bundle = pv.export(result, tmp_path / "b", onnx=True)
    model = result.model.eval()
    g = torch.Generator().manual_seed(1)
    cases = {
        "encoder": (torch.rand(5, 1, 8, 8, generator=g), model.encode),
        "decoder": (torch.randn(5, model.latent_dim, generator=g), model.decode),
    }
    for name, (x, fn) in cases.items():
        session = onnxruntime.InferenceSession(str(bundle / f"{name}.onnx"))
        outputs = [o.name for o in session.get_outputs()]
        got = dict(zip(outputs, session.run(None, {"input": x.numpy()})))
        with torch.no_grad():
            d = fn(x)
        base = getattr(d, "base_dist", d)  # Independent(Normal) or LowRankMultivariateNormal
        want = {k: getattr(base, k).numpy() for k in outputs}
        assert outputs and set(outputs) <= set(type(base).arg_constraints)
        for key in outputs:
            np.testing.assert_allclose(
                got[key], want[key], rtol=1e-5, atol=1e-6 * abs(want[key]).max()
            )


def test_onnx_is_refused_for_a_model_whose_encoder_takes_labels(tmp_path, capsys):
    pytest.importorskip("onnx")
    config = tiny_config(epochs=1).replace(model={"model": "cvae"})
    result = pv.train(config, progress=False)
    with pytest.raises(pv.ConfigError, match="no ONNX graphs"):
        pv.export(result, tmp_path / "b", onnx=True)
    assert not (tmp_path / "b").exists()
    assert pv.load(pv.export(result, tmp_path / "plain")).num_classes == 10


def test_a_model_built_by_hand_exports_and_loads(tmp_path):
    model = pv.VAE((1, 8, 8), latent_dim=3, hidden=(16,), guide="lowrank", prior="vamp")
    bundle = pv.export(model, tmp_path / "b")
    loaded = pv.load(bundle)
    assert type(loaded) is pv.VAE and type(loaded.q) is type(model.q)
    a = model.state_dict()
    assert all(torch.equal(a[k], v) for k, v in loaded.state_dict().items())
    info = json.loads((bundle / "model.json").read_text())
    assert info["architecture"]["model"]["prior"] == "vamp"
    assert (
        info["trained"] is None
        and "| guide q(z\\|x) | `lowrank` |" in (bundle / "README.md").read_text()
    )


def test_onnx_is_refused_for_a_flow_guide_and_nothing_is_left(tmp_path):
    pytest.importorskip("onnx")
    model = pv.VAE((1, 8, 8), latent_dim=2, hidden=(8,), guide="iaf")
    with pytest.raises(pv.ConfigError, match="transformed distribution"):
        pv.export(model, tmp_path / "b", onnx=True)
    assert list(tmp_path.iterdir()) == []
