"""Out-of-distribution detection with a VAE's scores, and linear probes on its latent means.

1. Train a VAE on Fashion-MNIST and score the Fashion-MNIST test set (in distribution) against the
   MNIST test set (out of distribution), then the reverse (a VAE of MNIST, Fashion-MNIST as the
   outlier). For each score of :mod:`pyro_vae.scores` the AUROC, AUPRC and FPR at 95% TPR.
   Expected (Nalisnick et al. 2019; Xiao et al. 2020): the raw likelihood ranks MNIST digits *above*
   Fashion-MNIST for a Fashion-MNIST model (AUROC below 0.5); the corrected scores (input
   complexity, likelihood regret) fix it.
2. Linear probe: logistic regression on the MNIST VAE's latent means with 100 and 1000 class-balanced
   labels (and all), beside the same regression on raw pixels with the same labels.

The seeds' network (784-400-20 MLP, Bernoulli likelihood on pixels in [0, 1], Adam 1e-3, batch 128).
On a CPU keep it small: ``--train-images``, ``--epochs`` and ``--test-images`` cut the budget, and the
script prints what was cut.

    python benchmarks/bench_anomaly.py --data-dir /path/with/MNIST/and/FashionMNIST --epochs 10
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

import pyro_vae
from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset, train
from pyro_vae.represent import linear_probe, pixel_probe
from pyro_vae.scores import detection_metrics, score


def subset(ds, n: int | None, seed: int = 0):
    """The first ``n`` training images of a fixed permutation (``None``: all)."""
    if n is None or n >= ds.train.shape[0]:
        return ds
    idx = torch.randperm(ds.train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    labels = ds.train_labels[idx] if ds.train_labels is not None else None
    return replace(ds, train=ds.train[idx], train_labels=labels)


def fit(name: str, args: argparse.Namespace):
    config = RunConfig(
        data=DataConfig(name, data_dir=args.data_dir),
        model=ModelConfig(latent_dim=20, hidden=(400,)),
        train=TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, seed=0, device=args.device),
    )
    data = load_dataset(config.data)
    t0 = time.perf_counter()
    result = train(config, progress=False, dataset=subset(data, args.train_images))
    print(
        f"VAE on {name}: {args.epochs} epochs on {result.dataset.train.shape[0]} images, test ELBO "
        f"{result.history[-1]['test_elbo']:.2f}, {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return result.model, data


def scores_of(model, x, args) -> dict:
    return score(
        model,
        x,
        num_samples=args.nll_samples,
        regret_steps=args.regret_steps,
        reference_log_px=args.reference,
    )


def detection(in_name: str, out_name: str, args: argparse.Namespace) -> dict:
    model, data_in = fit(in_name, args)
    data_out = load_dataset(DataConfig(out_name, data_dir=args.data_dir))
    device = next(model.parameters()).device
    n = args.test_images
    t0 = time.perf_counter()
    train_ref = data_in.train[: args.reference_images].to(device)
    args.reference = score(model, train_ref, num_samples=args.nll_samples, scores=("log_px",))[
        "log_px"
    ]
    s_in = scores_of(model, data_in.test[:n].to(device), args)
    s_out = scores_of(model, data_out.test[:n].to(device), args)
    metrics = detection_metrics(s_in, s_out)
    print(
        f"\n{in_name} (in) vs {out_name} (out): {n} test images each, log p(x) with K="
        f"{args.nll_samples}, regret {args.regret_steps} steps, typicality against "
        f"{args.reference_images} training images; scoring {time.perf_counter() - t0:.0f} s"
    )
    print(f"{'score':<12} {'AUROC':>7} {'AUPRC':>7} {'FPR@95':>7}   mean in / out")
    for name, m in metrics.items():
        print(
            f"{name:<12} {m['auroc']:7.3f} {m['auprc']:7.3f} {m['fpr_at_95_tpr']:7.3f}   "
            f"{float(s_in[name].mean()):9.2f} / {float(s_out[name].mean()):9.2f}",
            flush=True,
        )
    return {"model": model, "data": data_in, "metrics": metrics}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="directory with MNIST/ and FashionMNIST/")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-images", type=int, default=None, help="training subset (all)")
    p.add_argument("--test-images", type=int, default=1000, help="test images scored per set")
    p.add_argument("--nll-samples", type=int, default=1000)
    p.add_argument("--regret-steps", type=int, default=50)
    p.add_argument("--reference-images", type=int, default=1000, help="typicality's reference")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("== bench_anomaly: OOD detection with VAE scores; linear probes on latent means ==")
    print(f"pyro-vae {pyro_vae.__version__}, torch {torch.__version__}")
    print(f"machine: {platform.platform()}, {cpu_model()}, device {args.device}")
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"budget: {args.epochs} epochs on {args.train_images or 'all 60000'} training images; "
        f"{args.test_images} test images per set\n",
        flush=True,
    )
    out: dict = {"command": shlex.join(sys.argv), "device": args.device}
    fm = detection("fashion-mnist", "mnist", args)
    mn = detection("mnist", "fashion-mnist", args)
    out["fashion-mnist vs mnist"] = fm["metrics"]
    out["mnist vs fashion-mnist"] = mn["metrics"]

    model, data = mn["model"], mn["data"]
    device = next(model.parameters()).device
    counts = (100, 1000, None)
    latent = linear_probe(
        model,
        data.train.to(device),
        data.train_labels,
        data.test.to(device),
        data.test_labels,
        counts,
    )
    pixels = pixel_probe(data.train, data.train_labels, data.test, data.test_labels, counts)
    print("\nlinear probe on MNIST (logistic regression, class-balanced labelled subsets):")
    print(f"{'labels':>7} {'latent means':>13} {'raw pixels':>11}")
    for n in ("100", "1000", "all"):
        lat, pix = latent.get(f"probe_accuracy_{n}"), pixels.get(f"pixel_probe_accuracy_{n}")
        print(f"{n:>7} {lat:13.4f} {pix:11.4f}")
    out["probe"] = {**latent, **pixels}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
