"""VAE (k=1) against IWAE (k=5, k=50) on dynamically binarized MNIST, by test NLL, in one run.

The setting of Burda, Grosse and Salakhutdinov (2016), table 1, one stochastic layer: a 784-200-200-50
encoder and 50-200-200-784 decoder with tanh units, N(0, I) prior, diagonal Gaussian guide, Bernoulli
likelihood, dynamically binarized training images (a fresh draw every epoch), the test set binarized
once with a fixed seed. The paper trains for 3280 passes and reports test NLLs of 86.76 (VAE, k=1),
85.54 (IWAE, k=5) and 84.78 (IWAE, k=50) nats.

Here every model gets the same budget: the same number of passes (``--epochs``) over the 60k training
images with Adam (``--lr``, batch ``--batch-size``), through :func:`pyro_vae.train` with
``--objective elbo`` for k=1 and ``--objective iwae --particles k`` otherwise. Each model is then scored
by :func:`pyro_vae.evaluate.log_likelihood` (importance sampling, ``--nll-samples`` = 5000 samples per
image) on the first ``--test-points`` test images (all 10,000 on a GPU; a fixed subset on a CPU, said in
the output), and by the test ELBO and IWAE-50 bound on the same images. All models see the same test
images, so the differences are paired; the standard error of each difference is printed.

Runs single-threaded by default (``torch.set_num_threads(1)``; ``--threads``) because the machine is
shared.

    python benchmarks/bench_iwae.py --data-dir /path/with/MNIST/raw
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

import pyro_vae
from pyro_vae import evaluate
from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.data import load_dataset
from pyro_vae.train import train

PAPER = {1: 86.76, 5: 85.54, 50: 84.78}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-dir", default=None, help="directory with MNIST/raw (default: $PYRO_VAE_DATA)"
    )
    p.add_argument(
        "--epochs", type=int, default=3, help="passes over the training set, every model"
    )
    p.add_argument("--batch-size", type=int, default=20, help="20, as in the paper")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 50], help="particles; 1 is the VAE")
    p.add_argument("--nll-samples", type=int, default=5000)
    p.add_argument(
        "--test-points", type=int, default=None, help="default: 10000 on GPU, 500 on CPU"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    n_test = args.test_points or (10000 if device.type == "cuda" else 500)
    print("bench_iwae: VAE vs IWAE on dynamically binarized MNIST (Burda et al. 2016 architecture)")
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"machine: {platform.platform()}; CPU {cpu_model()}; torch {torch.__version__}; "
        f"pyro-vae {pyro_vae.__version__}; device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; torch threads {torch.get_num_threads()}"
    )
    print(
        f"budget: {args.epochs} passes over 60,000 images, batch {args.batch_size}, Adam lr {args.lr}, "
        f"seed {args.seed}; test NLL with K={args.nll_samples} on the first {n_test} test images"
        + ("" if n_test >= 10000 else " (a fixed subset, for CPU time)"),
        flush=True,
    )

    data_cfg = DataConfig(dataset="mnist", data_dir=args.data_dir, binarize="dynamic")
    data = load_dataset(data_cfg)
    rows = []
    per_image = {}
    for k in args.ks:
        config = RunConfig(
            data=data_cfg,
            model=ModelConfig(latent_dim=50, hidden=(200, 200), activation="tanh"),
            train=TrainConfig(
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                objective="elbo" if k == 1 else "iwae",
                particles=k,
                seed=args.seed,
                device=str(device),
            ),
        )
        t0 = time.perf_counter()
        result = train(config, progress=False, dataset=data)
        train_s = time.perf_counter() - t0
        model = result.model
        x = result.dataset.test[:n_test]
        torch.manual_seed(1234)  # the same evaluation noise for every model
        t0 = time.perf_counter()
        ll = evaluate.log_likelihood(model, x, args.nll_samples)
        nll_s = time.perf_counter() - t0
        iwae50 = float(evaluate.iwae_bound(model, x, 50).mean())
        elbo = evaluate.elbo(model, x)
        stats = evaluate.latent_statistics(model, x)
        per_image[k] = -ll.cpu()
        row = {
            "k": k,
            "objective": config.train.objective,
            "test_nll": float(-ll.mean()),
            "test_elbo": elbo,
            "test_iwae50": iwae50,
            "active_units": stats["active_units"],
            "rate": stats["rate"],
            "train_seconds": train_s,
            "nll_seconds": nll_s,
            "paper_nll": PAPER.get(k),
        }
        rows.append(row)
        print(
            f"k={k:<3} ({row['objective']}): test NLL {row['test_nll']:.2f} nats  "
            f"ELBO {elbo:.2f}  IWAE-50 {iwae50:.2f}  active units {row['active_units']}  "
            f"train {train_s:.0f} s  NLL eval {nll_s:.0f} s",
            flush=True,
        )

    print()
    print(
        f"{'model':<12}{'k':>4}{'test NLL':>10}{'-ELBO':>9}{'-IWAE50':>9}{'AU':>5}{'train s':>9}{'paper':>8}"
    )
    for r in rows:
        name = "VAE" if r["k"] == 1 else "IWAE"
        paper = f"{r['paper_nll']:.2f}" if r["paper_nll"] else "-"
        print(
            f"{name:<12}{r['k']:>4}{r['test_nll']:>10.2f}{-r['test_elbo']:>9.2f}"
            f"{-r['test_iwae50']:>9.2f}{r['active_units']:>5}{r['train_seconds']:>9.0f}{paper:>8}"
        )
    ks = [r["k"] for r in rows]
    nlls = [r["test_nll"] for r in rows]
    ordered = all(a > b for a, b in zip(nlls, nlls[1:])) if ks == sorted(ks) else None
    print()
    if ordered is not None:
        print(
            f"ordering NLL(k={ks[0]}) > ... > NLL(k={ks[-1]}): {'holds' if ordered else 'does NOT hold'}"
        )
    if 1 in per_image and 50 in per_image:
        d = per_image[1] - per_image[50]
        se = float(d.std() / math.sqrt(d.numel()))
        gain = float(d.mean())
        verdict = "met" if gain >= 1.0 else "NOT met"
        print(
            f"IWAE k=50 beats the VAE by {gain:.2f} nats (paired s.e. {se:.2f}); target >= 1 nat: {verdict}"
        )
    for a, b in zip(ks, ks[1:]):
        d = per_image[a] - per_image[b]
        print(
            f"NLL(k={a}) - NLL(k={b}) = {float(d.mean()):.2f} +- {float(d.std() / math.sqrt(d.numel())):.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "test_points": n_test}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
