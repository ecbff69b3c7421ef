"""Plugins: a user's own parts are found by the CLI through --import MODULE and through the
``pyro_vae.plugins`` entry-point group, and by the Python API alike."""

from __future__ import annotations

import sys
import textwrap

import pytest

from pyro_vae import GUIDES, PyroVAEError, plugins
from pyro_vae.cli import main

PLUGIN = """
from pyro_vae.guides import GUIDES, DiagonalNormal


@GUIDES.register("{name}")
class WideDiagonal(DiagonalNormal):
    '''q(z|x) = N(mu(x), diag sigma(x)^2) with a larger floor on sigma.'''

    def __init__(self, feature_dim: int, latent_dim: int, floor: float = 0.1) -> None:
        super().__init__(feature_dim, latent_dim, min_scale=floor)
"""


@pytest.fixture(autouse=True)
def _registry_restored(monkeypatch) -> None:
    """Registrations made by a test's plugin are undone, so other tests see the stock registry."""
    monkeypatch.setattr(GUIDES, "_factories", dict(GUIDES._factories))


def _write(tmp_path, module: str, name: str) -> None:
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(PLUGIN.format(name=name)))


def _install(tmp_path, monkeypatch, module: str, entry: str) -> None:
    """A distribution on sys.path declaring ``module`` under the plugin entry-point group."""
    dist = tmp_path / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[pyro_vae.plugins]\n{entry} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "_entry_points_loaded", False)


def test_import_option_finds_a_users_guide(tmp_path, monkeypatch, capsys) -> None:
    _write(tmp_path, "my_vae_parts", "wide-diagonal")
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--guide", "wide-diagonal", "--guide-opt", "floor=0.5", "--epochs", "1"]
    argv += ["--latent-dim", "2", "--hidden", "8", "--no-progress", "--no-plots"]
    argv += ["--run-dir", str(tmp_path / "run")]
    assert main(argv) == 2  # not imported: an unknown guide, and the hint says how
    assert "--import MODULE" in capsys.readouterr().err
    # a module name is looked up on the path as it is: the current directory is not added
    assert main([*argv, "--import", "my_vae_parts"]) == 2
    assert "--import ./my_vae_parts.py" in capsys.readouterr().err
    assert main([*argv, "--import", "./my_vae_parts.py"]) == 0
    assert '"floor": 0.5' in (tmp_path / "run" / "config.json").read_text()
    assert main(["evaluate", str(tmp_path / "run"), "--nll-samples", "0"]) == 0


def test_import_of_a_missing_module_is_one_line(capsys) -> None:
    assert main(["train", "--import", "no_such_module_here"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--import no_such_module_here" in err


def test_an_installed_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch) -> None:
    _write(tmp_path, "ep_vae_parts", "entry-point-diagonal")
    _install(tmp_path, monkeypatch, "ep_vae_parts", "parts")
    assert "entry-point-diagonal" not in GUIDES
    # the Python API: asking the registry for the name loads the installed plugins
    guide = GUIDES.build("entry-point-diagonal", feature_dim=4, latent_dim=2, floor="0.2")
    assert guide.min_scale == 0.2
    sys.modules.pop("ep_vae_parts", None)


def test_a_broken_plugin_is_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_parts.py").write_text("raise RuntimeError('boom')\n")
    _install(tmp_path, monkeypatch, "broken_parts", "broken")
    with pytest.raises(PyroVAEError, match=r"plugin .broken. \(broken_parts\) failed to load"):
        plugins.load_entry_points()
