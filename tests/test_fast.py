"""FastSVI: the captured-graph step gives SVI's losses, gradients and updates on the same draws."""

from __future__ import annotations

import shutil
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from torch.distributions import constraints

from pyro_vae import VAE
from pyro_vae.fast import CaptureError, FastSVI, capture_loss, eager_objective
from pyro_vae.models import M2
from pyro_vae.objectives import build_objective
from pyro_vae.optim import adam

X_SHAPE = (1, 6, 6)


def _data(n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, *X_SHAPE, generator=g) < 0.5).float()


def _vae() -> VAE:
    pyro.set_rng_seed(0)
    return VAE(X_SHAPE, latent_dim=3, hidden=(8,))


def _m2() -> M2:
    pyro.set_rng_seed(0)
    return M2(X_SHAPE, 3, latent_dim=2, hidden=(8,))


def _compare(make_model, make_objective, batches, *, slow_objective=None, between=None):
    """Step an SVI and a FastSVI on twin models, seeding identically before each step."""
    pyro.clear_param_store()
    slow_model, fast_model = make_model(), make_model()
    slow = SVI(slow_model.model, slow_model.guide, adam(1e-2), (slow_objective or make_objective)())
    fast = FastSVI(fast_model.model, fast_model.guide, adam(1e-2), make_objective())
    for i, xb in enumerate(batches):
        if between is not None:
            between(i, slow_model, fast_model)
        pyro.set_rng_seed(100 + i)
        expected = slow.step(xb)
        pyro.set_rng_seed(100 + i)
        got = fast.step(xb)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-4), f"step {i}"
    for (name, a), b in zip(slow_model.named_parameters(), fast_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    return fast


def _batches(x: torch.Tensor) -> list[torch.Tensor]:
    # a full batch, the last incomplete one, the full one again
    return [x[:16], x[16:32], x[32:], x[:16], x[8:24]]


@pytest.mark.parametrize(
    "objective", ["elbo", "meanfield", "iwae", "renyi", "jit-elbo", "elbo-particles"]
)
def test_same_steps_as_svi(objective: str) -> None:
    if objective == "elbo-particles":

        def make():
            return build_objective("elbo", 3)

    elif objective in ("iwae", "renyi"):

        def make():
            return build_objective(objective, 4)

    else:

        def make():
            return build_objective(objective)

    # the slow arm of jit-elbo is Trace_ELBO: JitTrace_ELBO itself reuses the 16-point trace on the
    # 8-point batch (its cache is keyed by the number of arguments, not their shapes)
    slow = (lambda: build_objective("elbo")) if objective == "jit-elbo" else None
    fast = _compare(_vae, make, _batches(_data()), slow_objective=slow)
    assert fast.stats["slow"] == 0 and fast.stats["replayed"] == 5
    assert fast.stats["captures"] == 2  # batch sizes 16 and 8


@pytest.mark.parametrize(
    ("parts", "objective", "options"),
    [
        ({"guide": "lowrank"}, "meanfield", {}),  # in-place writes through views (capacitance)
        ({"guide": "iaf"}, "elbo", {}),
        ({"guide": "sylvester"}, "iwae", {}),
        ({"prior": "vamp"}, "elbo", {}),
        ({"prior": "flow"}, "elbo", {}),
        ({"model": "hvae"}, "elbo", {}),
        ({"network": "conv", "hidden": (8,)}, "elbo", {}),
        ({}, "elbo", {"free_bits": 0.5}),
    ],
)
def test_guides_priors_models_same_steps_as_svi(parts, objective, options) -> None:
    from pyro_vae import ModelConfig
    from pyro_vae.models import build_model

    def make_model():
        pyro.set_rng_seed(0)
        config = ModelConfig(**{"latent_dim": 2, "hidden": (8,), **parts})
        return build_model(config, (1, 8, 8), 10)

    def make():
        return build_objective(objective, 3 if objective == "iwae" else 1, **options)

    x = (torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    fast = _compare(make_model, make, [x[:16], x[16:], x[:16]])
    assert fast.stats["replayed"] == 3


def test_m2_enumerated_step_same_as_svi() -> None:
    """M2's unlabelled step (labels summed out by TraceEnum_ELBO), as SemiSupervisedPlan builds it."""

    def make():
        return TraceEnum_ELBO(max_plate_nesting=1)

    fast = _compare(_m2, make, _batches(_data()))
    assert fast.stats["replayed"] == 5 and fast.stats["guard_failures"] == 0
    graph = next(iter(fast._graphs.values()))
    assert graph.guarded  # TraceEnum_ELBO decides on `mask.all()`: the graph checks it each step


def test_labelled_m2_and_other_arguments() -> None:
    """Keyword and label arguments are part of the signature (M2's labelled step)."""
    x = _data()
    y = torch.arange(x.shape[0]) % 3

    pyro.clear_param_store()
    a, b = _m2(), _m2()
    slow = SVI(a.model, a.guide, adam(1e-2), Trace_ELBO(max_plate_nesting=1))
    fast = FastSVI(b.model, b.guide, adam(1e-2), Trace_ELBO(max_plate_nesting=1))
    for i, (xb, yb) in enumerate([(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:], y[32:])]):
        pyro.set_rng_seed(i)
        expected = slow.step(xb, yb)
        pyro.set_rng_seed(i)
        assert fast.step(xb, y=yb) == pytest.approx(expected, rel=1e-5)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def test_captured_loss_and_gradients_equal_the_objectives() -> None:
    """One graph, against ``differentiable_loss`` on the same draws: value and every gradient."""
    x = _data()[:16]
    for make_model, objective in (
        (_vae, build_objective("elbo")),
        (_m2, TraceEnum_ELBO(max_plate_nesting=1)),
    ):
        pyro.clear_param_store()
        model = make_model()
        captured = capture_loss(objective, model.model, model.guide, x)
        pyro.set_rng_seed(5)
        expected = objective.differentiable_loss(model.model, model.guide, x)
        expected.backward()
        want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad(set_to_none=True)
        pyro.set_rng_seed(5)
        loss, _ = captured(x)
        loss.backward()
        torch.testing.assert_close(loss.detach(), expected.detach())
        got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got.keys() == want.keys() and len(got) == len(captured.params)
        for name in want:
            torch.testing.assert_close(got[name], want[name], msg=name)


def test_capture_draws_nothing_from_the_global_generator() -> None:
    model = _vae()
    before = torch.get_rng_state()
    capture_loss(build_objective("elbo"), model.model, model.guide, _data()[:8])
    assert torch.equal(torch.get_rng_state(), before)


def test_eval_mode_and_batch_size_are_separate_graphs() -> None:
    def between(i: int, *models) -> None:
        for m in models:
            m.train(i != 3)  # step 3 in eval mode (a network with dropout would differ)

    fast = _compare(_vae, lambda: build_objective("elbo"), _batches(_data()), between=between)
    assert fast.stats["captures"] == 3  # (16, train), (8, train), (16, eval)


def test_kl_annealing_captures_each_weight() -> None:
    def make():
        return build_objective("elbo", kl_anneal=4, kl_anneal_start=0.1)

    objectives = []

    def make_tracked():
        objectives.append(make())
        return objectives[-1]

    def between(i: int, *models) -> None:
        for o in objectives:
            o.set_epoch(i)

    fast = _compare(_vae, make_tracked, [_data()[:16]] * 4, between=between)
    assert fast.stats["captures"] == 4  # one KL weight per epoch: 0.1, 0.325, 0.55, 0.775


def _model(x: torch.Tensor) -> None:
    """A hand-written Pyro program: a constrained global parameter and a Python branch on data."""
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    loc = pyro.param("loc", torch.zeros(x.shape[-1]))
    if bool((x.sum(-1) > 0).all()):  # decided on the data's values
        loc = loc + 1.0
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, scale).to_event(1), obs=x)


def _guide(x: torch.Tensor) -> None:
    w = pyro.param("w", torch.full((x.shape[-1],), 0.5))
    s = pyro.param("s", torch.ones(x.shape[-1]), constraint=constraints.positive)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(w * x, s).to_event(1))


def test_python_branch_on_data_is_guarded() -> None:
    """A batch on which the captured branch goes the other way is taken by the slow path."""
    g = torch.Generator().manual_seed(0)
    positive = torch.rand(8, 3, generator=g) + 0.1
    mixed = torch.randn(8, 3, generator=g)
    mixed[0] = -1.0
    batches = [positive, positive * 2, mixed, positive]
    results = []
    for cls in (SVI, FastSVI):
        pyro.clear_param_store()
        svi = cls(_model, _guide, adam(1e-2), Trace_ELBO())
        losses = []
        for i, xb in enumerate(batches):
            pyro.set_rng_seed(i)
            losses.append(svi.step(xb))
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        results.append((losses, params, svi))
    (slow_losses, slow_params, _), (fast_losses, fast_params, fast) = results
    assert fast_losses == pytest.approx(slow_losses, rel=1e-5)
    for k in slow_params:  # constrained parameters included
        torch.testing.assert_close(fast_params[k], slow_params[k])
    assert fast.stats["guard_failures"] == 1 and fast.stats["replayed"] == 3


def test_cleared_param_store_captures_again() -> None:
    pyro.clear_param_store()
    fast = FastSVI(_model, _guide, adam(1e-2), Trace_ELBO())
    x = torch.rand(8, 3) + 0.1
    fast.step(x)
    pyro.clear_param_store()  # new parameter tensors: the old graph holds the old ones
    fast.step(x)
    assert fast.stats["captures"] == 2 and fast.stats["replayed"] == 2


def test_gradient_hooks_fall_back_to_the_slow_path() -> None:
    """dreg weights gradients with hooks, which no graph of tensor operations holds."""

    def make():
        return build_objective("dreg", 3)

    with pytest.warns(RuntimeWarning, match="cannot be captured"):
        fast = _compare(_vae, make, _batches(_data()))
    assert fast.stats["replayed"] == 0 and fast.stats["slow"] == 5
    model = _vae()
    strict = FastSVI(model.model, model.guide, adam(1e-2), make(), fallback=False)
    with pytest.raises(CaptureError, match="gradient hook"):
        strict.step(_data()[:8])


def test_eager_objective_unwraps_jit() -> None:
    jit = build_objective("jit-elbo")
    plain = eager_objective(jit)
    assert type(plain) is Trace_ELBO and plain.num_particles == jit.num_particles
    weighted = build_objective("jit-elbo", beta=2.0)
    assert type(eager_objective(weighted).inner) is Trace_ELBO
    assert type(weighted.inner).__name__.startswith("Jit")  # the original is left alone
    elbo = build_objective("elbo")
    assert eager_objective(elbo) is elbo


def test_unknown_compile_mode_is_refused() -> None:
    model = _vae()
    with pytest.raises(ValueError, match="compile="):
        FastSVI(model.model, model.guide, adam(1e-2), Trace_ELBO(), compile="fastest")


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="Inductor needs a C++ compiler",
)
def test_compiled_graph_takes_the_same_steps() -> None:
    """torch.compile of the captured graph: the same draws (fallback_random), float rounding apart."""
    pyro.clear_param_store()
    a, b = _vae(), _vae()
    x = _data()[:16]
    slow = SVI(a.model, a.guide, adam(1e-2), build_objective("elbo"))
    fast = FastSVI(b.model, b.guide, adam(1e-2), build_objective("elbo"), compile="default")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(3):
            pyro.set_rng_seed(i)
            expected = slow.step(x)
            pyro.set_rng_seed(i)
            assert fast.step(x) == pytest.approx(expected, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    assert fast.stats["replayed"] == 3


@pytest.mark.parametrize("model", ["vae", "m2", "cvae"])
def test_train_with_fast_eager_gives_the_same_run(model) -> None:
    """--fast eager through the training plans: the same weights as Pyro's SVI, bit for bit."""
    from pyro_vae import train
    from pyro_vae.cli import train_config

    argv = ["--model", model, "--epochs", "2", "--latent-dim", "2", "--hidden", "16"]
    argv += ["--batch-size", "100", "--device", "cpu"] + (
        ["--labels", "20"] if model == "m2" else []
    )
    slow = train(train_config(argv), progress=False)
    fast = train(train_config([*argv, "--fast", "eager"]), progress=False)
    a, b = slow.model.state_dict(), fast.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    for r, s in zip(slow.history, fast.history):
        assert r["test_elbo"] == pytest.approx(s["test_elbo"], rel=1e-6)


def test_an_unknown_fast_mode_is_refused() -> None:
    from pyro_vae import ConfigError
    from pyro_vae.cli import train_config

    with pytest.raises(ConfigError, match="unknown --fast 'turbo'"):
        train_config(["--fast", "turbo"])


def test_a_run_resumed_with_fast_equals_the_uninterrupted_run(tmp_path) -> None:
    from pyro_vae import train
    from pyro_vae.cli import train_config

    argv = ["--epochs", "3", "--latent-dim", "2", "--hidden", "16", "--batch-size", "100"]
    argv += ["--device", "cpu"]
    full = train(train_config(argv), tmp_path / "full", progress=False)
    part = [*argv[:1], "1", *argv[2:]]
    train(train_config(part), tmp_path / "part", progress=False)
    resumed = train(
        train_config([*argv, "--fast", "eager"]), tmp_path / "part", resume=True, progress=False
    )
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
