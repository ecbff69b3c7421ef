"""Parts describe themselves: pv.describe writes down the class and constructor arguments of every
built-in part (recursively), pv.rebuild builds the same architecture again."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import pyro_vae as pv
from pyro_vae.config import ModelConfig
from pyro_vae.describe import NotDescribable, arguments


@pytest.mark.parametrize("name", pv.MODELS.names())
@pytest.mark.parametrize(("guide", "prior"), [("iaf", "vamp"), ("lowrank", "mixture")])
def test_every_model_rebuilds_from_its_description(name, guide, prior) -> None:
    config = ModelConfig(name, latent_dim=3, hidden=(8,), guide=guide, prior=prior)
    model = pv.build_model(config, (1, 4, 4), 3)
    spec = json.loads(json.dumps(pv.describe(model)))  # JSON, nothing else
    again = pv.rebuild(spec)
    assert type(again) is type(model)
    assert pv.describe(again) == spec
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in again.state_dict().items()} == shapes
    again.load_state_dict(model.state_dict())  # the same architecture, parameter for parameter


def test_a_description_says_what_the_object_is() -> None:
    vae = pv.VAE((1, 4, 4), latent_dim=7, guide="iaf", prior="vamp", hidden=(8,))
    spec = pv.describe(vae)
    assert spec["class"] == "pyro_vae.models.vae:VAE"
    args = spec["args"]
    assert (args["guide"], args["prior"], args["latent_dim"]) == ("iaf", "vamp", 7)
    assert (args["network"], args["hidden"], args["likelihood"]) == ("mlp", [8], "bernoulli")
    # the parts it built describe themselves too
    assert pv.describe(vae.q)["class"] == "pyro_vae.guides.iaf:InverseAutoregressiveFlow"
    assert pv.describe(vae.encoder)["args"]["hidden"] == [8]


def test_parts_passed_as_objects_are_described_recursively() -> None:
    guide = pv.guides.LowRankNormal(8, 3, rank=2)
    vae = pv.VAE((1, 4, 4), 3, hidden=(8,), guide=guide, prior="mixture")
    spec = pv.describe(vae)
    assert spec["args"]["guide"] == {
        "class": "pyro_vae.guides.lowrank:LowRankNormal",
        "args": {**pv.describe(guide)["args"], "rank": 2},
    }
    again = pv.rebuild(spec)
    assert type(again.q) is pv.guides.LowRankNormal and again.q.rank == 2
    assert again.q is not guide


def test_the_outermost_constructor_records_not_the_super_calls() -> None:
    m2 = pv.build_model(ModelConfig("m2", latent_dim=2, hidden=(8,)), (1, 4, 4), 3)
    assert pv.describe(m2)["class"] == "pyro_vae.models.m2:M2"
    assert arguments(m2)["num_classes"] == 3
    # what M2 gave its base class's constructor is kept too
    from pyro_vae.models.cvae import CVAE

    assert arguments(m2, CVAE)["hidden"] == (8,) and "labels" not in arguments(m2, CVAE)


class Plain(nn.Module):
    def forward(self, x):
        return x


def test_what_cannot_be_described_is_named() -> None:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 8))
    enc.feature_dim = 8
    vae = pv.VAE((1, 4, 4), 2, hidden=(8,), encoder=enc)
    with pytest.raises(
        NotDescribable, match=r"VAE\.encoder is a torch.*Sequential, which does not"
    ):
        pv.describe(vae)
    with pytest.raises(NotDescribable, match="Plain, which does not record"):
        pv.describe(Plain())

    class Local(pv.VAE):
        pass

    with pytest.raises(NotDescribable, match="defined inside a function"):
        pv.describe(Local((1, 4, 4), 2, hidden=(8,)))
    guide = pv.guides.DiagonalNormal(8, 2)
    guide._pv_arguments = ((), {"feature_dim": 8, "latent_dim": 2, "min_scale": torch.ones(1)})
    with pytest.raises(NotDescribable, match=r"min_scale is a Tensor"):
        pv.describe(guide)


def test_rebuild_only_calls_parts() -> None:
    with pytest.raises(pv.ConfigError, match="not a pyro_vae part.*refusing"):
        pv.rebuild({"class": "os:system", "args": {"command": "true"}})
    with pytest.raises(NotDescribable, match="cannot be imported here"):
        pv.rebuild({"class": "no_such_module_xyz:Thing", "args": {}})
    with pytest.raises(pv.ConfigError, match="'class' entry"):
        pv.rebuild({"args": {}})


@pytest.mark.parametrize("name", pv.OBJECTIVES.names())
@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_every_objective_rebuilds_from_its_description(name, beta) -> None:
    from pyro_vae.config import TrainConfig
    from pyro_vae.objectives import objective_for

    objective = objective_for(TrainConfig(objective=name, beta=beta, particles=2))
    spec = json.loads(json.dumps(pv.describe(objective)))
    again = pv.rebuild(spec)
    assert type(again) is type(objective) and pv.describe(again) == spec
    assert again.num_particles == objective.num_particles == 2
