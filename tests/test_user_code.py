"""Failures inside the user's own code (plugins, registered parts, models and data sets passed in)
are reported as theirs: one line naming the module or part and the exception, exit status 2, the
traceback under --debug; and --import never widens the import path."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest
import torch

from pyro_vae import GUIDES, PyroVAEError, RunConfig, UserCodeError, train
from pyro_vae.cli import main

TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]
TRAIN += ["--no-plots"]


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(GUIDES, "_factories", dict(GUIDES._factories))
    monkeypatch.chdir(tmp_path)  # a command without --run-dir writes runs/ here, not in the repo


def _plugin(tmp_path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    sys.modules.pop(name, None)
    return str(path)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err and "This is a bug" not in err, (
        err
    )
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error: "), err
    return err


# -- plugins that fail on import ---------------------------------------------------------------------
PLUGINS = {
    "raises": ("raise RuntimeError('boom in the plugin')\n", "RuntimeError: boom in the plugin"),
    "syntax": ("def broken(:\n    pass\n", "SyntaxError"),
    "exits": ("import sys\nsys.exit(3)\n", "it called exit(3)"),
    "exit_builtin": ("exit()\n", "it called exit()"),
    "twice": (
        """
        from pyro_vae.guides import GUIDES, DiagonalNormal

        GUIDES.register("diagonal")(DiagonalNormal)
        """,
        "guide 'diagonal' is registered twice: by pyro_vae.guides.diagonal.DiagonalNormal",
    ),
}


@pytest.mark.parametrize("case", list(PLUGINS))
def test_a_failing_plugin_is_one_line_naming_it(case, tmp_path, capsys) -> None:
    body, message = PLUGINS[case]
    path = _plugin(tmp_path, f"plugin_{case}", body)
    for command in (TRAIN, ["sample", str(tmp_path / "run")]):
        assert main([*command, "--import", path]) == 2
        err = _err(capsys)
        assert f"--import {path} failed" in err and message in err, err
        assert "--debug" in err or case == "twice"


def test_debug_shows_the_plugins_traceback(tmp_path, capsys) -> None:
    path = _plugin(tmp_path, "plugin_debug", "raise RuntimeError('boom')\n")
    assert main([*TRAIN, "--import", path, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "plugin_debug.py" in err and "RuntimeError: boom" in err


def test_an_entry_point_plugin_that_exits_is_one_line(tmp_path, monkeypatch) -> None:
    from pyro_vae import plugins

    (tmp_path / "exiting_parts.py").write_text("raise SystemExit(1)\n")
    dist = tmp_path / "exiting_parts-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: exiting_parts\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pyro_vae.plugins]\nexiting = exiting_parts\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)
    with pytest.raises(UserCodeError, match=r"plugin 'exiting' .* failed to load: it called exit"):
        plugins.load_entry_points()
    sys.modules.pop("exiting_parts", None)


# -- the import path -----------------------------------------------------------------------------------
def test_import_does_not_put_the_current_directory_on_the_path(tmp_path, capsys) -> None:
    """A file in the working directory named like a dependency (sklearn.py) never runs in its
    place: --import ./parts.py imports that file only; sys.path stays as it was."""
    import subprocess
    from pathlib import Path

    (tmp_path / "parts_here.py").write_text("X = 1\n")
    (tmp_path / "sklearn.py").write_text("raise SystemExit('the shadow sklearn ran')\n")
    path_before = list(sys.path)
    assert main([*TRAIN, "--import", "./parts_here.py", "--run-dir", str(tmp_path / "r")]) == 0
    assert sys.path == path_before
    capsys.readouterr()
    sys.modules.pop("parts_here")
    assert main([*TRAIN, "--import", "parts_here"]) == 2
    assert "--import ./parts_here.py" in _err(capsys)
    # in a fresh process, as the pyro-vae script runs (-P: Python itself adds no directory); the
    # linear probe of evaluate imports scikit-learn after the plugin was imported
    code = "import sys; from pyro_vae.cli import main; sys.exit(main())"
    argv = [sys.executable, "-P", "-c", code, "evaluate", str(tmp_path / "r")]
    argv += ["--import", "./parts_here.py", "--nll-samples", "0", "--iwae-samples", "0"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "shadow" not in done.stderr and "probe_accuracy_all" in done.stdout


def test_a_file_named_like_a_module_on_the_path_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "sklearn.py").write_text("raise SystemExit('the shadow ran')\n")
    assert main([*TRAIN, "--import", str(tmp_path / "sklearn.py")]) == 2
    err = _err(capsys)
    assert "sklearn" in err and "rename the file" in err and "shadow ran" not in err


# -- registered parts that fail ----------------------------------------------------------------------
GUIDE = """
import torch
import pyro.distributions as dist
from torch import nn
from pyro_vae.guides import GUIDES, AmortizedGuide


@GUIDES.register("{name}")
class Broken(AmortizedGuide):
    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__(feature_dim, latent_dim)
        self.loc = nn.Linear(feature_dim, latent_dim)
        {init}

    def forward(self, h):
        {forward}
"""
GUIDE_CASES = {
    "raises": (
        "pass",
        "raise ValueError('my guide is unhappy')",
        "ValueError: my guide is unhappy",
    ),
    "wrong-shape": (
        "pass",
        "return dist.Normal(torch.zeros(3, 7), 1.0).to_event(1)",
        "the guide 'wrong-shape'",
    ),
    "nan": (
        "pass",
        "return dist.Normal(self.loc(h) * float('nan'), 1.0).to_event(1)",
        "the guide 'nan'",
    ),
    "init-raises": ("raise KeyError('no such key')", "pass", "failed to build: KeyError"),
}


@pytest.mark.parametrize("case", list(GUIDE_CASES))
def test_a_failing_guide_is_reported_as_the_users(case, tmp_path, capsys) -> None:
    init, forward, message = GUIDE_CASES[case]
    path = _plugin(
        tmp_path, f"guide_{case.replace('-', '_')}", GUIDE.format(name=case, init=init,
                                                                  forward=forward)
    )  # fmt: skip
    argv = [*TRAIN, "--import", path, "--guide", case, "--run-dir", str(tmp_path / "r")]
    code = main(argv)
    err = capsys.readouterr().err
    if case == "nan" and code == 2 and "loss became nan" in err:
        return  # a NaN that reaches the loss stops training with its own one-line error
    assert code == 2, err
    assert err.count("\n") == 1 and "internal error" not in err and "This is a bug" not in err, err
    assert message in err and path.rsplit("/", 1)[1][:-3] in err, err


def test_a_registered_guide_that_is_not_a_guide_is_refused(tmp_path, capsys) -> None:
    path = _plugin(
        tmp_path,
        "not_a_guide",
        """
        from pyro_vae.guides import GUIDES

        @GUIDES.register("not-a-guide")
        def make(feature_dim, latent_dim):
            return "a string"
        """,
    )
    assert main([*TRAIN, "--import", path, "--guide", "not-a-guide"]) == 2
    err = _err(capsys)
    assert "built a str, not a pyro_vae.guides.base.AmortizedGuide" in err


# -- models and data sets passed as objects --------------------------------------------------------
class ExplodingModel(torch.nn.Module):
    """A custom model whose guide raises."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def model(self, x):
        raise ArithmeticError("my model failed")

    def guide(self, x):
        pass


def test_a_custom_model_that_raises_is_named(tmp_path) -> None:
    from .conftest import tiny_config

    with pytest.raises(UserCodeError, match="ExplodingModel .* raised ArithmeticError"):
        train(tiny_config(epochs=1), progress=False, model=ExplodingModel())


def test_our_own_errors_are_not_blamed_on_the_user() -> None:
    from pyro_vae.usercode import blame, note_parts

    note_parts({})
    assert blame(KeyError("ours")) is None
    assert isinstance(UserCodeError("x"), PyroVAEError)
    assert RunConfig()  # (the defaults are pyro-vae's own parts)


def test_a_registered_data_set_that_raises_is_named(tmp_path, monkeypatch, capsys) -> None:
    from pyro_vae.data import DATASETS

    monkeypatch.setattr(DATASETS, "_factories", dict(DATASETS._factories))
    path = _plugin(
        tmp_path,
        "my_data_source",
        """
        from pyro_vae.data import DATASETS, DatasetSource

        def load(config):
            return {"x": 1}["y"]

        DATASETS.register("my-data")(DatasetSource(load, frozenset(), "broken"))
        """,
    )
    argv = [*TRAIN, "--import", path, "--dataset", "my-data", "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = _err(capsys)
    assert "the data set 'my-data'" in err and "KeyError" in err and "my_data_source" in err, err
