"""JointOptim: one torch optimiser over all parameters, the same updates as Pyro's per-parameter one."""

from __future__ import annotations

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO

from pyro_vae import VAE
from pyro_vae.optim import JointOptim, adam


def _run(make_optim, steps: int = 5, state=None) -> tuple[dict[str, torch.Tensor], object]:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    # one name for every run: optimiser state is keyed by parameter-store names
    vae = VAE((1, 4, 4), latent_dim=2, hidden=(8,), name="vae")
    optim = make_optim()
    if state is not None:
        optim.set_state(state)
    svi = SVI(vae.model, vae.guide, optim, Trace_ELBO())
    x = torch.rand(16, 1, 4, 4)
    for _ in range(steps):
        svi.step(x)
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}, optim


def test_same_updates_as_pyro_adam() -> None:
    ours, _ = _run(lambda: adam(1e-2))
    theirs, _ = _run(lambda: pyro.optim.Adam({"lr": 1e-2}))
    for k in ours:  # the fused kernel rounds differently from the per-tensor loop, nothing more
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6)
    exact, _ = _run(lambda: JointOptim(torch.optim.Adam, {"lr": 1e-2}))
    for k in exact:  # without fusing, one optimiser over all parameters is bit for bit the same
        assert torch.equal(exact[k], theirs[k])


def test_state_round_trip_continues_identically() -> None:
    _, optim = _run(lambda: adam(1e-2), steps=3)
    state = optim.get_state()
    assert all(set(s) >= {"exp_avg", "exp_avg_sq", "step"} for s in state.values())
    # a fresh optimiser with the saved state takes the same next step as the original would
    a, opt_a = _run(lambda: adam(1e-2), steps=3, state=state)
    b, _ = _run(lambda: adam(1e-2), steps=3)
    assert all(float(s["step"]) == 6 for s in opt_a.get_state().values())
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the restored moments matter


def test_only_the_given_parameters_move() -> None:
    w1 = torch.nn.Parameter(torch.ones(3))
    w2 = torch.nn.Parameter(torch.ones(3))
    pyro.clear_param_store()
    pyro.param("w1", w1)
    pyro.param("w2", w2)
    p1, p2 = pyro.param("w1").unconstrained(), pyro.param("w2").unconstrained()
    opt = JointOptim(torch.optim.Adam, {"lr": 0.1})
    (p1.sum() + p2.sum()).backward()
    opt([p1, p2])
    before = p2.detach().clone()
    p1.grad, p2.grad = torch.ones(3), torch.zeros(3)  # as SVI leaves them: zeros, not None
    opt([p1])
    assert torch.equal(
        p2.detach(), before
    )  # momentum did not move the parameter that was not given
    assert p2.grad is not None
