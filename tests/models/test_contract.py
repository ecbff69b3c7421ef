"""The contract every registered model meets, driven by the registries (new entries are tested for free):

- guide x prior x objective x model x likelihood x network, crossed pairwise (every pair of choices
  trains together in at least one run): training runs, its numbers are finite and it moves the
  parameters;
- a model refuses the objectives and options it does not declare, with one line naming the models
  that take them;
- models are self-contained: two models in one process, trained with plain Pyro SVI, each learn.
"""

from __future__ import annotations

import inspect
import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import GUIDES, LIKELIHOODS, MODELS, OBJECTIVES, PRIORS, VAE, ConfigError, train
from pyro_vae.build import validate
from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.data import Dataset
from pyro_vae.models import MODEL_SPECIFIC, Model
from pyro_vae.nn import NETWORKS
from pyro_vae.optim import adam
from pyro_vae.plan import TrainingPlan

SMALL = {
    "num_flows": 2,
    "num_pseudo": 4,
    "components": 3,
    "rank": 2,
    "hidden": (8,),
    "channels": 4,
    "layers": 2,
    "kernel": 3,
}


def _small(registry, name: str) -> dict:
    params = registry.parameters(name)
    return {k: v for k, v in SMALL.items() if k in params}


def tiny_data(seed: int = 0, n: int = 48, classes: int = 3) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + 16, 1, 4, 4, generator=g).round()
    y = torch.arange(n + 16) % classes
    return Dataset("tiny", x[:n], x[n:], y[:n], y[n:], num_classes=classes)


#: (guide, objective) pairs refused by design, each with a one-line error (tested below): beta-TCVAE
#: needs a q(z|x) that factorises over the dimensions, DIP-VAE its mean and covariance
_FLOWS = ("iaf", "planar", "radial", "spline", "sylvester")
REFUSED: dict[tuple[str, str], str] = {
    ("spline", "jit-elbo"): "the spline guide cannot",
    ("lowrank", "tcvae"): "needs a guide that factorises",
    **{(g, "tcvae"): "needs a guide that factorises" for g in _FLOWS},
    **{(g, "dipvae"): "needs the mean and covariance of q" for g in _FLOWS},
}
#: (model, objective) pairs refused by design: the disentangling objectives score one latent site
MODEL_REFUSED: dict[tuple[str, str], str] = {
    ("hvae", o): "needs a model with one latent site" for o in ("tcvae", "factorvae", "dipvae")
}


def takes(model: str, objective: str) -> bool:
    objectives = MODELS.get(model).objectives
    ok = objectives is None or objective in objectives
    return ok and (model, objective) not in MODEL_REFUSED


def pairwise_runs() -> list[tuple[str, str, str, str, str, str]]:
    """A small set of (model, guide, prior, objective, likelihood, network) runs in which every pair
    of choices that can train together appears at least once (a greedy covering array)."""
    factors = [
        MODELS.names(),
        GUIDES.names(),
        PRIORS.names(),
        OBJECTIVES.names(),
        LIKELIHOODS.names(),
        NETWORKS.names(),
    ]
    valid = [
        c for c in itertools.product(*factors) if takes(c[0], c[3]) and (c[1], c[3]) not in REFUSED
    ]

    def pairs(c):
        return {(i, c[i], j, c[j]) for i, j in itertools.combinations(range(len(factors)), 2)}

    uncovered = set().union(*(pairs(c) for c in valid))
    chosen = []
    while uncovered:
        best = max(valid, key=lambda c: len(pairs(c) & uncovered))
        chosen.append(best)
        uncovered -= pairs(best)
    return chosen


def config_for(
    model: str,
    guide: str,
    prior: str,
    objective: str,
    likelihood: str = "bernoulli",
    network: str = "mlp",
) -> RunConfig:
    model_opts = {"labels": 6, "val_size": 6} if "labels" in MODELS.parameters(model) else {}
    particles = 2 if objective in ("iwae", "renyi", "dreg") else 1
    return RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(
            model,
            latent_dim=2,
            hidden=(8,),
            guide=guide,
            guide_options=_small(GUIDES, guide),
            prior=prior,
            prior_options=_small(PRIORS, prior),
            likelihood=likelihood,
            likelihood_options=_small(LIKELIHOODS, likelihood),
            network=network,
            network_options=_small(NETWORKS, network),
            model_options=model_opts,
        ),
        train=TrainConfig(
            epochs=2,
            batch_size=16,
            objective=objective,
            particles=particles,
            device="cpu",
        ),
    )


@pytest.mark.parametrize(
    ("model", "guide", "prior", "objective", "likelihood", "network"), pairwise_runs()
)
def test_every_pair_of_choices_trains(model, guide, prior, objective, likelihood, network) -> None:
    pyro.set_rng_seed(0)
    data = tiny_data()
    config = config_for(model, guide, prior, objective, likelihood, network)
    from pyro_vae import build_model

    built = build_model(config.model, data.x_shape, data.num_classes)
    before = {k: v.detach().clone() for k, v in built.state_dict().items()}
    result = train(config, progress=False, dataset=data, model=built)
    assert len(result.history) == 2
    for record in result.history:
        assert math.isfinite(record["train_elbo"]) and math.isfinite(record["test_elbo"])
    after = result.model.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(moved) > len(before) // 2, f"only {moved} changed"


@pytest.mark.parametrize(("guide", "objective"), sorted(REFUSED))
def test_pairs_refused_by_design_say_so_in_one_line(guide, objective) -> None:
    config = config_for("vae", guide, "normal", objective)
    with pytest.raises(ConfigError, match=REFUSED[guide, objective]) as e:
        train(config, progress=False, dataset=tiny_data())
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("model", "objective"), sorted(MODEL_REFUSED))
def test_models_refused_by_design_say_so_in_one_line(model, objective) -> None:
    config = config_for(model, "diagonal", "normal", objective)
    with pytest.raises(ConfigError, match=MODEL_REFUSED[model, objective]) as e:
        train(config, progress=False, dataset=tiny_data())
    assert "\n" not in str(e.value)


def test_the_pairwise_runs_cover_every_registered_name() -> None:
    runs = pairwise_runs()
    for i, registry in enumerate((MODELS, GUIDES, PRIORS, OBJECTIVES, LIKELIHOODS, NETWORKS)):
        assert {r[i] for r in runs} == set(registry.names())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_declares_its_contract(name) -> None:
    cls = MODELS.get(name)
    assert issubclass(cls, Model)
    assert cls.options <= MODEL_SPECIFIC, cls.options - MODEL_SPECIFIC
    assert cls.objectives is None or cls.objectives <= set(OBJECTIVES.names())
    # its own or inherited from a model that builds the same keywords (M2 and its kin: CVAE's)
    assert cls.from_config.__func__ is not Model.from_config.__func__, (
        f"{name} must build itself from a ModelConfig"
    )
    assert cls.__doc__ and "Generative process" in inspect.getdoc(cls)
    data = tiny_data()
    config = config_for(name, "diagonal", "normal", "elbo")
    model = cls.from_config(config.model, data.x_shape, data.num_classes)
    plan = model.training_plan(data, config, adam(1e-3), Trace_ELBO())
    assert isinstance(plan, TrainingPlan)


@pytest.mark.parametrize("name", MODELS.names())
def test_objectives_a_model_does_not_train_with_are_refused(name) -> None:
    cls = MODELS.get(name)
    if cls.objectives is None:
        pytest.skip(f"{name} trains with every objective")
    refused = next(o for o in OBJECTIVES.names() if o not in cls.objectives)
    config = config_for(name, "diagonal", "normal", refused)
    with pytest.raises(
        ConfigError, match=rf"--model {name} trains with --objective .*, not {refused}"
    ):
        validate(config)


def test_two_models_in_one_process_both_learn_with_plain_svi() -> None:
    """Pyro's parameter store is global: two models under one name would share parameters."""
    torch.manual_seed(0)
    x = torch.rand(32, 1, 4, 4).round()
    a = VAE((1, 4, 4), 2, hidden=(8,))
    b = VAE((1, 4, 4), 2, hidden=(8,))
    assert a.name != b.name
    start = {m: {k: v.detach().clone() for k, v in m.named_parameters()} for m in (a, b)}
    svi_a = SVI(a.model, a.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi_b = SVI(b.model, b.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    for _ in range(3):
        svi_a.step(x)
    a_after_own = {k: v.detach().clone() for k, v in a.named_parameters()}
    for _ in range(3):
        svi_b.step(x)
    for m in (a, b):
        moved = [k for k, v in m.named_parameters() if not torch.equal(v, start[m][k])]
        assert len(moved) == len(start[m]), f"{m.name}: only {moved} learned"
    # b's steps did not touch a
    assert all(torch.equal(v, a_after_own[k]) for k, v in a.named_parameters())
