"""``--flows K`` sets the guide option ``num_flows`` and merges with ``--guide-opt``."""

from __future__ import annotations

from pyro_vae.cli import train_config as _config


def test_flows_sets_num_flows_beside_other_guide_options() -> None:
    config = _config(["--guide", "sylvester", "--flows", "6", "--guide-opt", "kind=householder"])
    assert config.model.guide == "sylvester"
    assert config.model.guide_options == {"kind": "householder", "num_flows": 6}


def test_no_flows_flag_leaves_the_guide_options_alone() -> None:
    assert _config(["--guide", "planar"]).model.guide_options == {}


def test_latent_dim2_reaches_the_model_config() -> None:
    assert _config(["--model", "hvae", "--latent-dim2", "5"]).model.model_options == {
        "latent_dim2": 5
    }
