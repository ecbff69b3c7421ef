"""Per-step time of pyro-vae's SVI step against a plain PyTorch step of the same modules (A/B).

What decides the speed of a small VAE on a GPU is the Python that runs per step, not the kernels.
This measures that overhead on any device, per training step, for:

- ``elbo``: Pyro's ``SVI`` with ``Trace_ELBO`` and ``pyro_vae.optim.adam`` (what ``pyro_vae.train``
  runs); plain: reparameterised sample, ``binary_cross_entropy_with_logits``, the Monte Carlo KL
  ``log q(z|x) - log p(z)`` at the sample (Trace_ELBO's estimator);
- ``meanfield``: ``TraceMeanField_ELBO``; plain: the closed-form Gaussian KL;
- ``jit-elbo``: pyro-vae's ``JitTrace_ELBO``; plain as for ``elbo``;
- ``iwae``: the IWAE bound with k=5 vectorised particles; plain: log-mean-exp of the k log weights;
- ``m2``: M2's unlabelled step (``pyro_vae.models.M2`` under ``TraceEnum_ELBO(max_plate_nesting=1)``,
  as ``SemiSupervisedPlan`` builds it); plain: the same networks, the sum over the K classes of
  q(y|x) (log p(x|z_y, y) + log p(z_y) + log p(y) - log q(z_y|x, y)) plus the entropy of q(y|x).

and, for every objective but ``jit-elbo`` (whose fast path is ``elbo``'s), pyro-vae's fast path
:class:`pyro_vae.fast.FastSVI` on the same objective: ``fast`` replays the captured ATen graph
eagerly, ``fast-compiled`` hands it to ``torch.compile`` (Inductor; ``--compile-mode
reduce-overhead`` for CUDA graphs on a GPU).

Every arm has its own copy of the modules, built from the same seed (same initial weights, checked)
and its own Adam (lr 1e-3; the plain arm uses torch's fused Adam, as ``pyro_vae.optim.adam`` does, so
the comparison is of the framework, not of the optimiser kernel). Before timing, each case checks that
the plain loss and pyro-vae's are the same number on the same random draws (printed as ``same loss``).

The arms alternate in rounds (``--rounds`` rounds of up to ``--steps`` steps each, the order reversed
every other round, warm-up steps excluded, steps per round cut for slow cases so a round of one arm
takes about ``--round-seconds``); the per-step time of an arm is the median over rounds, the ratio
the median over rounds of the per-round ratio. The data: MNIST-shaped random binary images
(``--data-dir``: the first MNIST training images, binarized at 0.5). Single-threaded by default.

    python benchmarks/bench_overhead.py                      # tiny (784-16-4) and seeds' (784-400-20)
    python benchmarks/bench_overhead.py --networks tiny --objectives elbo,m2 --breakdown --explain
    python benchmarks/bench_overhead.py --device cuda --compile-mode reduce-overhead
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder
from pyro import poutine
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled, zero_grads
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match

import pyro_vae
from pyro_vae.fast import FastSVI, dynamo_graph_breaks
from pyro_vae.models import M2, VAE
from pyro_vae.models.cvae import join
from pyro_vae.objectives import build_objective
from pyro_vae.optim import adam

NETWORKS = {"tiny": ((16,), 4), "seeds": ((400,), 20)}
OBJECTIVES = ("elbo", "meanfield", "jit-elbo", "iwae", "m2")
ARMS = ("plain", "pyro-vae", "fast", "fast-compiled")
X_SHAPE = (1, 28, 28)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- plain PyTorch losses on the modules of a pyro-vae model ------------------------------------------
def plain_elbo(net: VAE, x: torch.Tensor, kl: str = "mc") -> torch.Tensor:
    loc, scale = net.q.loc_scale(net.encoder(x))
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    rec = F.binary_cross_entropy_with_logits(net.decoder(z), x, reduction="sum")
    if kl == "mc":  # log q(z|x) - log p(z) at the sample; the constants cancel
        kl_term = (0.5 * z.square() - 0.5 * eps.square() - scale.log()).sum()
    else:  # closed form, Kingma and Welling (2014), appendix B
        kl_term = 0.5 * (scale.square() + loc.square() - 1.0).sum() - scale.log().sum()
    return rec + kl_term


def plain_iwae(net: VAE, x: torch.Tensor, k: int) -> torch.Tensor:
    loc, scale = net.q.loc_scale(net.encoder(x))
    eps = torch.randn((k, *loc.shape), dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps  # (k, N, D)
    rec = (
        -F.binary_cross_entropy_with_logits(net.decoder(z), x.expand(k, *x.shape), reduction="none")
        .flatten(2)
        .sum(-1)
    )
    log_w = rec + (0.5 * eps.square() + scale.log() - 0.5 * z.square()).sum(-1)
    return -(torch.logsumexp(log_w, 0) - math.log(k)).sum()


def plain_m2_unlabelled(net: M2, x: torch.Tensor) -> torch.Tensor:
    """-U(x) summed over the batch, labels enumerated in a leading dim (Kingma et al. 2014, eq. 7)."""
    n_cls = net.num_classes
    log_qy = net.classifier(x).log_softmax(-1)  # (N, K)
    y = torch.arange(n_cls, device=x.device).unsqueeze(-1)  # (K, 1)
    onehot = net.one_hot(y)  # (K, 1, K)
    loc, scale = net.q.loc_scale(net.join(join(net.encoder(x), onehot)))  # (K, N, D)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    logits = net.decoder(join(z, onehot))  # (K, N, *x_shape)
    log_px = (
        -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
        .flatten(2)
        .sum(-1)
    )
    log_pz_minus_qz = (0.5 * eps.square() + scale.log() - 0.5 * z.square()).sum(-1)
    elbo_y = log_px + log_pz_minus_qz - math.log(n_cls)  # (K, N)
    qy = log_qy.exp()
    return -((qy * elbo_y.T).sum() - (qy * log_qy).sum())


PLAIN_LOSS: dict[str, Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]] = {
    "elbo": plain_elbo,
    "jit-elbo": plain_elbo,
    "meanfield": lambda net, x: plain_elbo(net, x, "analytic"),
    "iwae": lambda net, x: plain_iwae(net, x, 5),
    "m2": plain_m2_unlabelled,
}


# -- the arms -------------------------------------------------------------------------------------
@dataclass
class Arm:
    name: str
    step: Callable[[torch.Tensor], float]
    model: torch.nn.Module
    first_step_s: float = 0.0
    times: list[float] = field(default_factory=list)
    svi: object = None


def build(objective: str, network: str, seed: int, device: torch.device) -> torch.nn.Module:
    hidden, latent = NETWORKS[network]
    pyro.set_rng_seed(seed)
    if objective == "m2":
        return M2(X_SHAPE, 10, latent_dim=latent, hidden=hidden).to(device)
    return VAE(X_SHAPE, latent_dim=latent, hidden=hidden).to(device)


def pyro_objective(objective: str):  # type: ignore[no-untyped-def]
    if objective == "m2":  # as SemiSupervisedPlan builds its unlabelled step's objective
        return TraceEnum_ELBO(num_particles=1, vectorize_particles=False, max_plate_nesting=1)
    return build_objective(objective, 5 if objective == "iwae" else 1)


def make_arms(objective: str, network: str, args: argparse.Namespace) -> list[Arm]:
    device = torch.device(args.device)
    arms = []
    for name in args.arms:
        if name.startswith("fast") and objective == "jit-elbo":
            continue  # FastSVI captures JitTrace_ELBO through Trace_ELBO: the elbo case
        model = build(objective, network, args.seed, device)
        if name == "plain":
            opt = plain_adam(model, args)
            loss_fn = PLAIN_LOSS[objective]

            def plain_step(x, model=model, opt=opt, loss_fn=loss_fn) -> float:  # type: ignore[no-untyped-def]
                loss = loss_fn(model, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss.item()

            arms.append(Arm(name, plain_step, model))
            continue
        if name == "pyro-vae":
            svi = SVI(model.model, model.guide, adam(args.lr), pyro_objective(objective))
        else:
            mode = args.compile_mode if name == "fast-compiled" else None
            svi = FastSVI(
                model.model, model.guide, adam(args.lr), pyro_objective(objective), compile=mode
            )
        arms.append(Arm(name, svi.step, model, svi=svi))
    first = arms[0].model.state_dict()
    for arm in arms[1:]:
        same = all(torch.equal(v, arm.model.state_dict()[k]) for k, v in first.items())
        assert same, f"{arm.name} must start from the same weights as {arms[0].name}"
    return arms


def same_loss(objective: str, network: str, x: torch.Tensor, args: argparse.Namespace) -> float:
    """|plain - pyro-vae| / |pyro-vae| for one batch, same weights and same random draws."""
    device = torch.device(args.device)
    a = build(objective, network, args.seed, device)
    b = build(objective, network, args.seed, device)
    pyro.set_rng_seed(args.seed + 7)
    with torch.no_grad():
        plain = float(PLAIN_LOSS[objective](a, x))
    pyro.set_rng_seed(args.seed + 7)
    pyro_loss = pyro_objective(objective).loss(b.model, b.guide, x)
    pyro.clear_param_store()
    return abs(plain - pyro_loss) / abs(pyro_loss)


def plain_adam(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Adam:
    """The plain arm's Adam: fused, like pyro_vae.optim.adam (``--plain-adam default``: torch's
    default implementation, the stock idiom, a per-tensor loop on the CPU)."""
    fused = {"fused": True} if args.plain_adam == "fused" else {}
    return torch.optim.Adam(model.parameters(), lr=args.lr, **fused)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_batches(args: argparse.Namespace) -> list[torch.Tensor]:
    n = args.pool * args.batch_size
    if args.data_dir:
        from pyro_vae import DataConfig, load_dataset

        data = load_dataset(DataConfig(dataset="mnist", data_dir=args.data_dir, binarize="none"))
        x = (data.train[:n] > 0.5).float()
        source = f"MNIST training images 1-{n}, binarized at 0.5"
    else:
        g = torch.Generator().manual_seed(args.seed + 1)
        x = (torch.rand(n, *X_SHAPE, generator=g) < 0.5).float()
        source = f"{n} random binary MNIST-shaped images (p = 0.5)"
    print(f"data    : {source}; {args.pool} batches of {args.batch_size}, cycled")
    return list(x.to(args.device).split(args.batch_size))


def run_case(
    objective: str, network: str, batches: list[torch.Tensor], args: argparse.Namespace
) -> dict:
    device = torch.device(args.device)
    check = same_loss(objective, network, batches[0], args)
    arms = make_arms(objective, network, args)
    pool = len(batches)
    cursor = {a.name: 0 for a in arms}

    def run(arm: Arm, steps: int) -> float:
        i = cursor[arm.name]
        sync(device)
        t0 = time.perf_counter()
        for s in range(steps):
            arm.step(batches[(i + s) % pool])
        sync(device)
        cursor[arm.name] = i + steps
        return time.perf_counter() - t0

    for arm in arms:  # warm-up: captures, compiles, JIT traces, allocator
        arm.first_step_s = run(arm, 1)
    per_step = {a.name: run(a, args.warmup) / args.warmup for a in arms}
    steps = max(3, min(args.steps, round(args.round_seconds / max(per_step.values()))))
    for r in range(args.rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            arm.times.append(run(arm, steps) / steps * 1e3)
    by = {a.name: a for a in arms}
    out = {"objective": objective, "network": network, "steps": steps, "same_loss": check}
    for arm in arms:
        out[arm.name] = statistics.median(arm.times)
        out[f"{arm.name} first"] = arm.first_step_s
        if arm.name != "plain" and "plain" in by:
            ratios = [t / p for t, p in zip(arm.times, by["plain"].times)]
            out[f"{arm.name} ratio"] = statistics.median(ratios)
        stats = getattr(arm.svi, "stats", None)
        if stats is not None:
            out[f"{arm.name} stats"] = dict(stats)
    pyro.clear_param_store()
    return out


# -- where the time of a Trace_ELBO step goes -------------------------------------------------------
def breakdown(batches: list[torch.Tensor], args: argparse.Namespace, steps: int = 300) -> None:
    """Per-step milliseconds of the parts of one step, tiny network, elbo, taken by hand."""
    device = torch.device(args.device)
    parts: dict[str, dict[str, float]] = {}

    def timed(arm: str, part: str, fn: Callable[[], object]) -> object:
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        parts.setdefault(arm, {}).setdefault(part, 0.0)
        parts[arm][part] += time.perf_counter() - t0
        return out

    plain = build("elbo", "tiny", args.seed, device)
    opt = plain_adam(plain, args)
    vae = build("elbo", "tiny", args.seed, device)
    elbo = pyro_objective("elbo")
    optim = adam(args.lr)
    fast_model = build("elbo", "tiny", args.seed, device)
    fast = FastSVI(fast_model.model, fast_model.guide, adam(args.lr), pyro_objective("elbo"))
    fast.step(batches[0])
    graph = next(iter(fast._graphs.values()))

    def one_step(x: torch.Tensor) -> None:
        # plain
        loss = timed("plain", "forward (loss)", lambda: plain_elbo(plain, x))
        timed("plain", "backward", lambda: (opt.zero_grad(set_to_none=True), loss.backward()))
        timed("plain", "optimiser", opt.step)
        timed("plain", "loss.item()", loss.item)
        # pyro-vae: SVI.step taken apart (Trace_ELBO.loss_and_grads, then the optimiser)
        capture = poutine.trace(param_only=True)
        capture.__enter__()
        guide_trace = timed(
            "pyro-vae", "guide trace", lambda: poutine.trace(vae.guide).get_trace(x)
        )
        model_trace = timed(
            "pyro-vae",
            "model trace (replayed)",
            lambda: poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x),
        )

        def log_probs() -> None:
            model_trace.compute_log_prob()
            guide_trace.compute_score_parts()

        def checks() -> None:
            nonlocal guide_trace, model_trace
            if is_validation_enabled():
                check_model_guide_match(model_trace, guide_trace, 1)
            guide_trace = prune_subsample_sites(guide_trace)
            model_trace = prune_subsample_sites(model_trace)

        timed("pyro-vae", "checks, pruning", checks)
        timed("pyro-vae", "log_prob at every site", log_probs)
        loss_pair = timed(
            "pyro-vae",
            "loss + surrogate",
            lambda: elbo._differentiable_loss_particle(model_trace, guide_trace),
        )
        timed("pyro-vae", "backward", lambda: loss_pair[1].backward())
        capture.__exit__(None, None, None)

        def optimise() -> None:
            params = {s["value"].unconstrained() for s in capture.trace.nodes.values()}
            optim(params)
            zero_grads(params)

        timed("pyro-vae", "optimiser (+ param capture, zero_grads)", optimise)
        # the whole Trace_ELBO validation path once per step (shape checks), for reference
        timed(
            "pyro-vae (reference)",
            "get_importance_trace (traces + checks + log_prob)",
            lambda: get_importance_trace("flat", 1, vae.model, vae.guide, (x,), {}),
        )
        # fast path: graph replay
        out = timed("fast", "graph replay (loss)", lambda: graph(x)[0])
        timed("fast", "backward", out.backward)

        def fast_optimise() -> None:  # as FastSVI.step does it
            fast.optim.optimizer.step()
            torch._foreach_zero_([p.grad for p in graph.param_tensors])

        timed("fast", "optimiser (+ zero_grads)", fast_optimise)
        timed("fast", "loss.item()", out.item)

    for i in range(steps + 20):
        if i == 20:
            parts.clear()
        one_step(batches[i % len(batches)])
    pyro.clear_param_store()
    print(
        "\n== where the time of one step goes: tiny network (784-16-4), elbo, batch "
        f"{args.batch_size}, {steps} steps, ms/step =="
    )
    for arm, ps in parts.items():
        total = sum(ps.values()) / steps * 1e3
        inner = "; ".join(f"{k} {v / steps * 1e3:.3f}" for k, v in ps.items())
        print(f"{arm:22s} total {total:.3f}: {inner}")
    print(f"fast graph: {graph.num_ops} ATen ops, {len(graph.params)} parameters")


def explain(batches: list[torch.Tensor], args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    print("\n== torch.compile on Pyro's loss itself (torch._dynamo.explain), tiny network ==")
    for objective in ("elbo", "m2"):
        m = build(objective, "tiny", args.seed, device)
        info = dynamo_graph_breaks(pyro_objective(objective), m.model, m.guide, batches[0])
        print(
            f"{objective:9s}: {info['graphs']} graphs, {info['graph_breaks']} graph breaks, "
            f"{info['ops']} ops; reasons: {' | '.join(r[:90] for r in info['reasons'])}"
        )
        pyro.clear_param_store()
    print("(a FastSVI graph is one ATen graph: torch.compile gets it whole, fullgraph=True)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default="tiny,seeds", help="comma-separated: tiny, seeds")
    p.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated")
    p.add_argument(
        "--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS)
    )
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--steps", type=int, default=50, help="steps per arm and round (at most)")
    p.add_argument("--round-seconds", type=float, default=0.25, help="cut steps to about this")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per arm first")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--pool", type=int, default=8, help="distinct batches, cycled")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--plain-adam", choices=["fused", "default"], default="fused", help="the plain arm's Adam"
    )
    p.add_argument("--compile-mode", default="default", help="fast-compiled: torch.compile mode")
    p.add_argument("--data-dir", default=None, help="directory with MNIST/raw (default: random)")
    p.add_argument("--breakdown", action="store_true", help="time the parts of an elbo step")
    p.add_argument("--explain", action="store_true", help="graph breaks of torch.compile on Pyro")
    args = p.parse_args(argv)
    args.arms = [a for a in args.arms.split(",") if a]
    bad = set(args.arms) - set(ARMS) or set(args.objectives.split(",")) - set(OBJECTIVES)
    if bad:
        p.error(f"unknown arm or objective: {', '.join(sorted(bad))}")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace's deprecation
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    t_start = time.time()
    print("== bench_overhead: per-step time, pyro-vae's SVI step vs plain PyTorch, same modules ==")
    print(f"command : python {shlex.join(['benchmarks/bench_overhead.py', *sys.argv[1:]])}")
    print(f"platform: {platform.platform()}; python {platform.python_version()}")
    print(f"cpu     : {cpu_model()} ({os.cpu_count()} logical cores visible)")
    if device.type == "cuda":
        print(f"gpu     : {torch.cuda.get_device_name(device)}")
    print(
        f"versions: torch {torch.__version__}, pyro-ppl {pyro.__version__}, "
        f"pyro-vae {pyro_vae.__version__}"
    )
    print(
        f"device  : {device}; torch threads {torch.get_num_threads()}; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at start"
    )
    print(f"optim   : Adam lr {args.lr}; plain arm: torch.optim.Adam ({args.plain_adam})")
    batches = load_batches(args)
    results = []
    for network in args.networks.split(","):
        for objective in args.objectives.split(","):
            r = run_case(objective, network, batches, args)
            results.append(r)
            cells = " | ".join(
                f"{a} {r[a]:.3f} ms" + (f" ({r[a + ' ratio']:.2f}x)" if a + " ratio" in r else "")
                for a in args.arms
                if a in r
            )
            print(f"{network:5s} {objective:9s} {r['steps']:2d} steps/round: {cells}", flush=True)
    hidden = {k: f"784-{v[0][0]}-{v[1]}" for k, v in NETWORKS.items()}
    print(
        f"\nper-step milliseconds (median of {args.rounds} rounds) and, in brackets, the median "
        "per-round ratio to plain; batch "
        f"{args.batch_size}; 'first': the first step's seconds (capture, compile, JIT trace)"
    )
    arms = args.arms
    print(
        "| network | objective | "
        + " | ".join(f"{a} ms" for a in arms)
        + " | "
        + " | ".join(f"{a} / plain" for a in arms if a != "plain")
        + " | first step s ("
        + ", ".join(a for a in arms if a != "plain")
        + ") | same loss |"
    )
    print("|---" * (2 + 2 * len(arms) + 1) + "|")
    for r in results:
        ms = " | ".join(f"{r[a]:.3f}" if a in r else "-" for a in arms)
        ratio = " | ".join(
            f"{r[a + ' ratio']:.2f}" if a + " ratio" in r else "-" for a in arms if a != "plain"
        )
        first = ", ".join(f"{r[a + ' first']:.2f}" if a in r else "-" for a in arms if a != "plain")
        print(
            f"| {r['network']} ({hidden[r['network']]}) | {r['objective']} | {ms} | {ratio} | "
            f"{first} | {r['same_loss']:.1e} |"
        )
    for r in results:
        for a in arms:
            st = r.get(f"{a} stats")
            if st and (st["slow"] or st["guard_failures"]):
                print(f"note: {r['network']} {r['objective']} {a}: {st}")
    for r in results:
        for a in ("fast", "fast-compiled"):
            if a + " ratio" in r and r["objective"] in ("elbo", "m2"):
                verdict = "met" if r[a + " ratio"] <= 1.2 else "NOT met"
                print(
                    f"target {a} <= 1.2x plain, {r['network']} {r['objective']}: {verdict} "
                    f"({r[a + ' ratio']:.2f}x; pyro-vae {r['pyro-vae ratio']:.2f}x)"
                )
    if args.breakdown:
        breakdown(batches, args)
    if args.explain:
        explain(batches, args)
    print(
        f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end; "
        f"whole run {time.time() - t_start:.0f} s"
    )


if __name__ == "__main__":
    main()
