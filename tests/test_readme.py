"""The README's claims, each checked against the code: its commands parse and validate, its lists of
names match the registries, its statement of which models take which objectives matches the models'
declarations."""

from __future__ import annotations

import inspect
import re
import shlex

import pytest

import pyro_vae as pv
from pyro_vae import GUIDES, MODELS, OBJECTIVES, PRIORS
from pyro_vae.cli import train_config

from .conftest import REPO

README = (REPO / "README.md").read_text()


def _train_commands() -> list[list[str]]:
    out = []
    for line in README.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("pyro-vae train") and "--resume" not in line:
            out.append(shlex.split(line)[2:])
    return out


@pytest.mark.parametrize("argv", _train_commands(), ids=" ".join)
def test_every_train_command_in_the_readme_is_a_valid_configuration(argv) -> None:
    argv = [a.replace("~/data", "/tmp") for a in argv]
    train_config(argv)  # raises on anything the README promises but the code refuses
    assert len(_train_commands()) >= 5


@pytest.mark.parametrize("registry", [GUIDES, PRIORS, OBJECTIVES, MODELS], ids=lambda r: r.kind)
def test_every_registered_name_is_documented(registry) -> None:
    missing = [n for n in registry.names() if f"`{n}`" not in README]
    assert not missing, f"the README does not mention {registry.kind}s {missing}"


def test_the_readme_says_which_models_take_which_objectives() -> None:
    restricted = {n: MODELS.get(n).objectives for n in MODELS if MODELS.get(n).objectives}
    assert restricted == {"m1m2": {"elbo"}, "m2": {"elbo"}, "adgm": {"elbo"}, "sdgm": {"elbo"}}
    assert "(m2, m1m2, adgm, sdgm) train with their own bound**" in README
    assert "`--objective elbo` only): every\nobjective works with vae, hvae and cvae" in README
    unrestricted = sorted(set(MODELS.names()) - set(restricted))
    assert unrestricted == ["cvae", "hvae", "vae"]


def test_the_python_api_the_readme_shows_exists() -> None:
    for name in ("RunConfig", "train", "load_run", "log_likelihood", "VAE"):
        assert hasattr(pv, name) and f"pv.{name}" in README, name
    for name in ("Model", "TrainingPlan"):
        assert hasattr(pv, name) and f"pyro_vae.{name}" in README, name
    assert {"model", "dataset"} <= set(inspect.signature(pv.load_run).parameters)
    assert "guide" in inspect.signature(pv.log_likelihood).parameters
    assert re.search(r"entry-point group `pyro_vae.plugins`", README)
    assert pv.plugins.GROUP == "pyro_vae.plugins"


def test_the_first_two_commands_are_install_and_test() -> None:
    block = README.split("```bash", 1)[1].split("```", 1)[0].strip().splitlines()
    assert block[0].startswith("python3 -m venv .venv") and block[0].endswith("pyro-vae train")
    assert 'pip install -e ".[dev]"' in block[0]
    assert block[1] == "python -m pytest -q"
