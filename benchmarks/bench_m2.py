"""Semi-supervised classification on MNIST / Fashion-MNIST: M2, M1+M2, ADGM, SDGM at label budgets.

A thin wrapper over the product's experiment (:func:`pyro_vae.semi_supervised.semi_supervised`, the
same as ``pyro-vae semi-supervised``): for every model, label budget and labelled subset (seed) it
trains one run in ``--out/runs/`` (resumed if stopped: rerun the same command), then prints the
machine, the command and the table of test accuracy against **labels used** (training + validation),
mean ± sd over the subsets, beside the published anchors, and writes ``--out/results.csv`` and
``--out/accuracy.png``.

Every label counts (Oliver et al. 2018): by default the reported model is the last epoch's, selected
with no label. ``--val-labels M`` takes M of the budget's labels for selection; ``--val-size N`` adds
N validation labels beyond the budget (the protocol of the old rows in RESULTS.md: ``--val-size
5000``), and the table counts them.

The budget is set by ``--epochs``, the network (``--hidden``, ``--latent-dim``, ``--aux-dim``) and
``--train-subset`` (a fixed random subset of the training images; 0 = all). The anchors train for
hundreds of epochs on all 60,000 images; a CPU run here is much smaller and says so.

    python benchmarks/bench_m2.py --data-dir DATA --models m2 adgm --labels 100 --subsets 3 \\
        --epochs 5 --train-subset 10000                                # a CPU-sized run
    python benchmarks/bench_m2.py --data-dir DATA --device cuda --models m2 m1m2 adgm \\
        --labels 100 1000 --subsets 3 --epochs 200 --out runs/semi-mnist # the full table, a GPU
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

import pyro_vae
from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.semi_supervised import semi_supervised, summarise

#: published test accuracies (%) on MNIST at a label budget (selected with extra validation labels)
ANCHORS = {
    ("m2", 100): "Kingma et al. 2014: 88.0; Pyro tutorial: 93.2",
    ("m2", 600): "Kingma et al. 2014: 95.1",
    ("m2", 1000): "Kingma et al. 2014: 96.4",
    ("m2", 3000): "Kingma et al. 2014: 97.2; Pyro tutorial: 95.8",
    ("m1m2", 100): "Kingma et al. 2014: 96.7",
    ("m1m2", 1000): "Kingma et al. 2014: 97.6",
    ("adgm", 100): "Maaløe et al. 2016: 99.04",
    ("sdgm", 100): "Maaløe et al. 2016: 98.68",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", "--model", nargs="+", default=["m2"])
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--subsets", type=int, default=3, help="labelled subsets (seeds) per budget")
    p.add_argument("--first-seed", type=int, default=0, help="seed of the first subset")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--m1-epochs", type=int, default=None, help="m1m2: epochs of M1 (half)")
    p.add_argument("--hidden", type=int, nargs="+", default=[500])
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--aux-dim", type=int, default=0, help="adgm, sdgm: size of a (0: latent)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--aux-weight", type=float, default=None, help="alpha per labelled image")
    p.add_argument("--labelled-every", type=int, default=1)
    p.add_argument("--val-labels", type=int, default=0, help="of the budget, for selection")
    p.add_argument("--val-size", type=int, default=0, help="validation labels beyond the budget")
    p.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("runs/semi-supervised"))
    p.add_argument("--shard", default="0/1", help="I/N: this process trains every N-th run")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    print(f"pyro-vae {pyro_vae.__version__}, torch {torch.__version__}")
    print(f"machine: {platform.platform()}, {cpu_model()}, device {args.device}, ", end="")
    print(f"threads {args.threads}")
    if torch.cuda.is_available() and args.device != "cpu":
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"command: python {shlex.join(sys.argv)}", flush=True)
    # model options each model takes (the experiment gives every model those it takes)
    opts = {
        "aux_weight": args.aux_weight,
        "labelled_every": args.labelled_every,
        "val_labels": args.val_labels,
        "val_size": args.val_size,
        "m1_epochs": args.m1_epochs,
        "aux_dim": args.aux_dim or None,
    }
    base = RunConfig(
        data=DataConfig(args.dataset, data_dir=args.data_dir),
        model=ModelConfig(
            latent_dim=args.latent_dim,
            hidden=tuple(args.hidden),
            model_options={k: v for k, v in opts.items() if v is not None},
        ),
        train=TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device
        ),
    )
    from pyro_vae.semi_supervised import parse_shard

    t0 = time.perf_counter()
    rows = semi_supervised(
        base,
        args.out,
        models=args.models,
        budgets=args.labels,
        subsets=range(args.first_seed, args.first_seed + args.subsets),
        train_subset=args.train_subset,
        shard=parse_shard(args.shard),
    )
    print(f"\n{args.dataset}: test accuracy (%) of the reported model, mean ± sd over subsets")
    print(f"this process: {(time.perf_counter() - t0) / 60:.1f} min; the table: {args.out}")
    n_images = {r["train_images"] for r in rows}
    print(f"training images: {', '.join(map(str, sorted(n_images)))}; epochs {args.epochs}")
    print(f"{'model':>6}  {'labels used':>11}  {'mean':>6}  {'sd':>5}  {'subsets':<26}  anchors")
    for s in summarise(rows):
        accs = ", ".join(f"{100 * a:.2f}" for a in s["accuracies"])
        budget = s["labels_used"] - args.val_size
        anchor = ANCHORS.get((s["model"], budget), "") if args.dataset == "mnist" else ""
        print(
            f"{s['model']:>6}  {s['labels_used']:>11}  {100 * s['mean']:6.2f}  "
            f"{100 * s['sd']:5.2f}  {accs:<26}  {anchor}"
        )
    secs = [r["seconds"] for r in rows]
    if secs:
        print(f"training time a run: {min(secs):.0f}-{max(secs):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
