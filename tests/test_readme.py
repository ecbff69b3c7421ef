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


def _python_section() -> list[str]:
    section = README.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_python_section_runs_as_written_and_its_model_meets_the_contract(
    tmp_path, monkeypatch
) -> None:
    """Every Python block of the README's Python section, executed in order as one script; the
    pv.Model subclass it defines then passes the model contract tests."""
    from .models import test_contract as contract

    blocks = _python_section()
    assert len(blocks) >= 2 and any("class TinyVAE(pv.Model)" in b for b in blocks)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
        cls = namespace["TinyVAE"]
        assert MODELS.get("tiny-vae") is cls
        contract.test_every_model_declares_its_contract("tiny-vae")
        contract.test_every_pair_of_choices_trains(
            "tiny-vae", "diagonal", "normal", "elbo", "bernoulli", "mlp"
        )
        contract.test_every_pair_of_choices_trains(
            "tiny-vae", "diagonal", "normal", "iwae", "bernoulli", "mlp"
        )
    finally:
        MODELS._factories.pop("tiny-vae", None)
    assert (tmp_path / "runs" / "digits" / "figures").is_dir()
    config, model, _ = pv.load_run(tmp_path / "runs" / "digits")
    assert (config.model.guide, config.model.prior, config.model.latent_dim) == ("iaf", "vamp", 7)
    assert namespace["x"].shape == (16, 64, 1, 8, 8)
