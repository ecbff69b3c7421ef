"""pyro-vae's ``train()`` against a plain-PyTorch loop of the same VAE on MNIST, in one run.

The seeds' setting: 784-400-20 ReLU MLP, continuous pixels in [0, 1], Bernoulli likelihood on logits,
Adam (lr 1e-3), batch 128. Both sides use the same network modules (pyro_vae's ``MLPEncoder``,
``DiagonalNormal`` with its softplus scale, ``MLPDecoder``), the same initial weights (same seed; checked)
and the same cached tensors (the whole data set as one tensor, batches by index).

- **pyro-vae**: :func:`pyro_vae.train` (Pyro's SVI with ``Trace_ELBO`` and ``pyro_vae.optim.adam``: one fused torch Adam over all
  parameters, a ``PyroOptim``), one epoch
  per call, each call resuming the run directory from its checkpoint (resuming restores the RNG and
  optimiser state, so the run equals an uninterrupted one). Seconds per epoch are ``train()``'s own
  ``epoch_time`` (the training steps only, not the test evaluation or the checkpoint).
- **plain**: a hand-written loop: reparameterised sample, ``binary_cross_entropy_with_logits`` summed
  over pixels plus the closed-form Gaussian KL (the PyTorch VAE example's loss; ``--plain-kl mc`` uses
  Trace_ELBO's Monte Carlo KL instead), ``loss.backward()``, ``torch.optim.Adam`` with torch's defaults (the stock idiom; on the CPU
  that is the per-tensor loop, not the fused kernel pyro-vae uses).

The two alternate epoch by epoch, so machine noise falls on both. The test loss of both models is the
negative ELBO per image in nats, computed by one function (closed-form KL, one reconstruction sample per
image, a fixed noise seed); pyro-vae's own Monte Carlo test ELBO is printed beside it.

Runs single-threaded (``torch.set_num_threads(1)``, change with ``--threads``) because the machine is
shared: parallel work by others then affects timings less, and one core is the comparison's unit.

    python benchmarks/bench_core.py --data-dir /path/with/MNIST/raw
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder
from torch import nn

import pyro_vae
from pyro_vae import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    build_model,
    load_dataset,
    train,
)
from pyro_vae.guides.diagonal import DiagonalNormal
from pyro_vae.nn import MLPDecoder, MLPEncoder


class PlainVAE(nn.Module):
    """The same modules, built in the same order as :class:`pyro_vae.VAE` builds them."""

    def __init__(self, x_shape: tuple[int, ...], latent_dim: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = MLPEncoder(x_shape, hidden, "relu")
        self.decoder = MLPDecoder(latent_dim, x_shape, tuple(reversed(hidden)), "relu")
        self.q = DiagonalNormal(self.encoder.feature_dim, latent_dim)


def neg_elbo_sum(
    net: nn.Module,
    x: torch.Tensor,
    kl: str = "analytic",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sum over the batch of -ELBO(x): one reparameterised sample, Bernoulli likelihood on logits."""
    loc, scale = net.q.loc_scale(net.encoder(x))
    eps = torch.randn(loc.shape, generator=generator, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps
    rec = F.binary_cross_entropy_with_logits(net.decoder(z), x, reduction="sum")
    if kl == "analytic":  # KL(N(loc, scale^2) || N(0, 1)), Kingma and Welling (2014), appendix B
        kl_term = 0.5 * (scale.square() + loc.square() - 1.0).sum() - scale.log().sum()
    else:  # log q(z|x) - log p(z) at the sample, as Trace_ELBO does; constants cancel
        kl_term = (-0.5 * eps.square() - scale.log() + 0.5 * z.square()).sum()
    return rec + kl_term


@torch.no_grad()
def test_loss(net: nn.Module, x: torch.Tensor, seed: int = 1234) -> float:
    """Negative ELBO per image (nats) with the closed-form KL; the same noise for every model."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    total = sum(float(neg_elbo_sum(net, xb, "analytic", g)) for xb in x.split(1000))
    return total / x.shape[0]


def plain_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    kl: str,
    g: torch.Generator,
) -> tuple[float, float]:
    """One epoch of the plain loop; returns (seconds, mean training loss per image)."""
    t0 = time.perf_counter()
    n = x.shape[0]
    total = 0.0
    for idx in torch.randperm(n, generator=g, device=x.device).split(batch_size):
        loss = neg_elbo_sum(net, x[idx], kl, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item()  # the loss as a float each step, as pyro's svi.step returns it
    return time.perf_counter() - t0, total / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("PYRO_VAE_DATA"), help="MNIST location")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--plain-kl", choices=["analytic", "mc"], default="analytic")
    p.add_argument("--objective", default="elbo", help="pyro-vae objective (elbo, meanfield, ...)")
    p.add_argument(
        "--extra-objective",
        action="append",
        default=[],
        metavar="NAME",
        help="also time train() with this objective (e.g. jit-elbo, meanfield); repeatable",
    )
    p.add_argument(
        "--train-subset", type=int, default=0, help="use only the first N training images (0: all)"
    )
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("== bench_core: pyro-vae train() vs a plain PyTorch loop, MNIST, seeds' setting ==")
    print(f"command : python {shlex.join(['benchmarks/bench_core.py', *sys.argv[1:]])}")
    print(f"platform: {platform.platform()}; python {platform.python_version()}")
    print(f"cpu     : {cpu_model()} ({os.cpu_count()} logical cores visible)")
    print(
        f"versions: torch {torch.__version__}, pyro-ppl {pyro.__version__}, "
        f"pyro-vae {pyro_vae.__version__}"
    )
    print(
        f"device  : {device}; torch threads {torch.get_num_threads()} (set, the machine is shared)"
    )

    config = RunConfig(
        data=DataConfig(dataset="mnist", data_dir=args.data_dir, binarize="none"),
        model=ModelConfig(latent_dim=20, network="mlp", hidden=(400,), likelihood="bernoulli"),
        train=TrainConfig(
            epochs=1,
            batch_size=args.batch_size,
            lr=args.lr,
            objective=args.objective,
            seed=args.seed,
            device=args.device,
        ),
    )
    data = load_dataset(config.data)
    if args.train_subset:
        data = replace(data, train=data.train[: args.train_subset])
    data = data.to(device)
    print(
        f"data    : MNIST train {tuple(data.train.shape)}, test {tuple(data.test.shape)}, "
        f"continuous pixels in [0, 1]; {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}"
    )

    # plain model: seeded exactly as train() seeds before it builds the VAE
    pyro.set_rng_seed(args.seed)
    plain = PlainVAE(data.x_shape, 20, (400,)).to(device)
    pyro.set_rng_seed(args.seed)
    reference = build_model(config.model, data.x_shape, data.num_classes).to(device)
    same_init = all(
        torch.equal(v, reference.state_dict()[k]) for k, v in plain.state_dict().items()
    )
    assert same_init, "the plain loop's modules must start from the VAE's initial weights"
    del reference
    opt = torch.optim.Adam(plain.parameters(), lr=args.lr)
    g = torch.Generator(device=device).manual_seed(args.seed + 1)

    objectives = {"pyro-vae": args.objective, **{f"pyro-vae {o}": o for o in args.extra_objective}}
    arms = ["pyro-vae", "plain", *list(objectives)[1:]]
    times: dict[str, list[float]] = {a: [] for a in arms}
    train_loss: dict[str, float] = {}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:

        def pyro_epoch(arm: str, epoch: int) -> None:
            # one more epoch of the same run, resumed from its checkpoint after the first
            tcfg = replace(config.train, epochs=epoch, objective=objectives[arm])
            run_dir = Path(tmp) / arm.replace(" ", "_")
            res = train(
                replace(config, train=tcfg), run_dir, resume=epoch > 1, progress=False, dataset=data
            )
            times[arm].append(res.history[-1]["epoch_time"])
            train_loss[arm] = -res.history[-1]["train_elbo"]
            results[arm] = res

        for epoch in range(1, args.epochs + 1):
            # alternate the order, so that neither side always runs first
            for arm in arms if epoch % 2 else arms[::-1]:
                if arm == "plain":
                    t, train_loss[arm] = plain_epoch(
                        plain, opt, data.train, args.batch_size, args.plain_kl, g
                    )
                    times[arm].append(t)
                else:
                    pyro_epoch(arm, epoch)
            print(
                f"epoch {epoch:2d}: "
                + " | ".join(
                    f"{a} {times[a][-1]:6.2f} s (train loss {train_loss[a]:7.2f})" for a in arms
                )
                + f" | ratio {times['pyro-vae'][-1] / times['plain'][-1]:.3f}",
                flush=True,
            )

    steady = slice(1, None) if args.epochs > 1 else slice(None)  # epoch 1 includes warm-up
    med = {a: statistics.median(times[a][steady]) for a in arms}
    mean = {a: statistics.mean(times[a]) for a in arms}
    models = {a: (plain if a == "plain" else results[a].model) for a in arms}
    losses = {a: test_loss(m, data.test) for a, m in models.items()}
    print()
    print("| | " + " | ".join(arms) + " | ratio pyro-vae / plain |")
    print("|---" * (len(arms) + 2) + "|")
    print(
        f"| s/epoch, median of epochs 2-{args.epochs} | "
        + " | ".join(f"{med[a]:.2f}" for a in arms)
        + f" | {med['pyro-vae'] / med['plain']:.3f} |"
    )
    print(
        f"| s/epoch, mean of all {args.epochs} | "
        + " | ".join(f"{mean[a]:.2f}" for a in arms)
        + f" | {mean['pyro-vae'] / mean['plain']:.3f} |"
    )
    ratios = [a / b for a, b in zip(times["pyro-vae"], times["plain"])]
    print(
        "| per-epoch ratio pyro-vae / plain: min / median / max | "
        + " | " * (len(arms) - 1)
        + f" | {min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f} |"
    )
    print(
        f"| test loss after {args.epochs} epochs (-ELBO nats/image, closed-form KL) | "
        + " | ".join(f"{losses[a]:.2f}" for a in arms)
        + f" | diff {losses['pyro-vae'] - losses['plain']:+.2f} |"
    )
    print(
        "| pyro-vae's own test -ELBO (Monte Carlo KL, 1 particle) | "
        + " | ".join(
            f"{-results[a].history[-1]['test_elbo']:.2f}" if a in results else "" for a in arms
        )
        + " | |"
    )
    ratio = med["pyro-vae"] / med["plain"]
    verdict = "met" if ratio <= 1.25 else "NOT met"
    print(f"target pyro-vae <= 1.25x plain on CPU: {verdict} ({ratio:.3f}x, median s/epoch)")


if __name__ == "__main__":
    main()
