"""Semi-supervised M2 on MNIST: test accuracy of q(y|x) with 100, 600, 1000 and 3000 labels.

For every label budget the labelled subset (class-balanced) is drawn by ``--subsets`` different seeds,
M2 is trained with :func:`pyro_vae.train` (unlabelled batches with the label summed out by
``TraceEnum_ELBO``, labelled batches with the auxiliary classification loss, interleaved), the epoch
with the best validation accuracy is kept, and its test accuracy on the 10,000 MNIST test images is
reported: mean, standard deviation and every subset's value, beside the published anchors.

The budget is set by ``--epochs``, the network (``--hidden``, ``--latent-dim``) and ``--train-subset``
(train on a random subset of the 60,000 training images, labelled + validation + unlabelled; 0 = all).
The defaults are the full setting; a CPU run on a shared machine needs a much smaller budget, and the
numbers it gives are then *not* comparable with the anchors (which train for hundreds of epochs on all
60,000 images). Runs single-threaded by default (``torch.set_num_threads(1)``, ``--threads``) because the
machine is shared.

    python benchmarks/bench_m2.py --data-dir /path/with/MNIST/raw
    python benchmarks/bench_m2.py --device cuda --epochs 100          # the real benchmark, on a GPU

With ``--run-dir DIR`` every run keeps its checkpoint and per-epoch metrics in its own folder, and a
later call with the same options and a larger ``--epochs`` resumes those runs instead of starting
over (a budget can be extended in steps, and a stopped benchmark loses at most an epoch per run).

``--model m1m2`` runs M1+M2 (Kingma et al.'s stacked model, :class:`pyro_vae.models.StackedM2`)
instead: M1, a VAE with the same networks, is trained once on the training images without their
labels (``--m1-epochs``, KL warm-up ``--m1-kl-anneal``, dynamically binarized unless
``--m1-binarize none``), and every M2 run starts from it (the run's
own ``m1_epochs`` is 0), as in the paper, where one M1 serves every label budget.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

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
from pyro_vae.checkpoint import CHECKPOINT
from pyro_vae.data import binarize

#: published test accuracies (%) of M2 alone at a label budget
ANCHORS = {
    100: "Kingma et al. 2014: 88.0; Pyro tutorial: 93.2",
    600: "Kingma et al. 2014: 95.1",
    1000: "Kingma et al. 2014: 96.4",
    3000: "Kingma et al. 2014: 97.2; Pyro tutorial: 95.8",
}
TARGETS = {100: 95.0, 3000: 97.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=["m2", "m1m2"], default="m2")
    p.add_argument("--m1-epochs", type=int, default=20, help="m1m2: epochs of the shared M1")
    p.add_argument("--m1-kl-anneal", type=int, default=3, help="m1m2: M1's KL warm-up epochs")
    p.add_argument(
        "--m1-binarize",
        default="dynamic",
        choices=["none", "dynamic"],
        help="m1m2: M1's training images (dynamic: a fresh binarization every epoch)",
    )
    p.add_argument("--labels", type=int, nargs="+", default=[100, 600, 1000, 3000])
    p.add_argument("--subsets", type=int, default=3, help="labelled subsets (seeds) per budget")
    p.add_argument(
        "--first-seed", type=int, default=0, help="seed of the first subset (split runs by seed)"
    )
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[500])
    p.add_argument("--latent-dim", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--aux-weight", type=float, default=None, help="alpha per labelled image (default 50)"
    )
    p.add_argument("--labelled-every", type=int, default=1)
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="keep every run in RUN_DIR/MODEL-labelsN-seedS (checkpoint and metrics.jsonl per "
        "epoch); a run found there is resumed, so a larger --epochs extends it",
    )
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    data_cfg = DataConfig(args.dataset, data_dir=args.data_dir)
    full = load_dataset(data_cfg)
    data = full
    if args.train_subset:
        keep = torch.randperm(full.train.shape[0], generator=torch.Generator().manual_seed(1234))
        keep = keep[: args.train_subset]
        data = replace(full, train=full.train[keep], train_labels=full.train_labels[keep])

    print(
        f"pyro-vae {pyro_vae.__version__}, torch {torch.__version__}, pyro {__import__('pyro').__version__}"
    )
    print(
        f"machine: {platform.platform()}, {cpu_model()}, device {args.device}, threads {args.threads}"
    )
    if torch.cuda.is_available() and args.device != "cpu":
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    print(f"command: python {shlex.join(sys.argv)}")
    print(
        f"data: {args.dataset}, {data.train.shape[0]} training images (labelled + validation + "
        f"unlabelled), {data.test.shape[0]} test images; epochs {args.epochs}, hidden {args.hidden}, "
        f"latent {args.latent_dim}, batch {args.batch_size}, lr {args.lr}\n",
        flush=True,
    )

    results: dict[int, list[dict]] = {}
    t_all = time.perf_counter()
    m1_state = None
    if args.model == "m1m2":
        m1_data_cfg = replace(data_cfg, binarize=args.m1_binarize)
        m1_cfg = RunConfig(
            data=m1_data_cfg,
            model=ModelConfig("vae", latent_dim=args.latent_dim, hidden=tuple(args.hidden)),
            train=TrainConfig(
                epochs=args.m1_epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                kl_anneal=args.m1_kl_anneal,
                seed=0,
                device=args.device,
            ),
        )
        t0 = time.perf_counter()
        unlabelled = replace(binarize(data, args.m1_binarize), train_labels=None, num_classes=None)
        m1 = train(m1_cfg, dataset=unlabelled, progress=False)
        m1_state = m1.model.state_dict()
        print(
            f"M1 (VAE, {args.m1_epochs} epochs on the {data.train.shape[0]} training images, no "
            f"labels): test ELBO {m1.history[-1]['test_elbo']:.2f}, "
            f"{time.perf_counter() - t0:.0f} s\n",
            flush=True,
        )
    for n_labels in args.labels:
        for seed in range(args.first_seed, args.first_seed + args.subsets):
            cfg = RunConfig(
                data=data_cfg,
                model=ModelConfig(
                    args.model,
                    latent_dim=args.latent_dim,
                    hidden=tuple(args.hidden),
                    model_options={
                        "labels": n_labels,
                        "val_size": args.val_size,
                        "aux_weight": args.aux_weight,
                        "labelled_every": args.labelled_every,
                        **({"m1_epochs": 0} if m1_state is not None else {}),
                    },
                ),
                train=TrainConfig(
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=seed,
                    device=args.device,
                ),
            )
            t0 = time.perf_counter()
            model = None
            if m1_state is not None:  # every run starts from the one trained M1
                torch.manual_seed(seed)
                model = build_model(cfg.model, data.x_shape, data.num_classes)
                model.m1.load_state_dict(m1_state)
            run_dir = None
            if args.run_dir is not None:
                run_dir = args.run_dir / f"{args.model}-labels{n_labels}-seed{seed}"
            resume = run_dir is not None and (run_dir / CHECKPOINT).exists()
            r = train(cfg, run_dir, resume=resume, dataset=data, model=model, progress=False)
            dt = time.perf_counter() - t0
            acc = r.model.accuracy(r.dataset.test, r.dataset.test_labels)
            best = max(r.history, key=lambda h: h.get("val_accuracy", 0.0))
            row = {
                "labels": n_labels,
                "seed": seed,
                "test_accuracy": 100 * acc,
                "best_epoch": best["epoch"],
                "val_accuracy": 100 * best.get("val_accuracy", float("nan")),
                "last_epoch_test_accuracy": 100 * r.history[-1]["test_accuracy"],
                "test_elbo": best["test_elbo"],
                "seconds": dt,  # this invocation (a resumed run: only the added epochs)
                "epochs": len(r.history),
                "train_seconds": sum(h["epoch_time"] for h in r.history),
            }
            results.setdefault(n_labels, []).append(row)
            write_json(args, results)  # after every run: a stopped benchmark keeps what it measured
            print(
                f"labels {n_labels:5d} subset {seed}: test accuracy {row['test_accuracy']:.2f}% "
                f"(epoch {row['best_epoch']} by validation {row['val_accuracy']:.2f}%; last epoch "
                f"{row['last_epoch_test_accuracy']:.2f}%), test ELBO {row['test_elbo']:.2f}, {dt:.0f} s",
                flush=True,
            )
    total = time.perf_counter() - t_all

    print(
        f"\n{args.model} test accuracy (%), mean ± sd over {args.subsets} labelled subsets; total {total / 60:.1f} min"
    )
    print(f"{'labels':>6}  {'mean':>6}  {'sd':>5}  {'subsets':<24}  {'target':>6}  anchors")
    for n_labels, rows in results.items():
        accs = [r["test_accuracy"] for r in rows]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        target = TARGETS.get(n_labels)
        met = (
            ""
            if target is None
            else f"{target:.0f} {'met' if statistics.mean(accs) >= target else 'NOT met'}"
        )
        print(
            f"{n_labels:>6}  {statistics.mean(accs):6.2f}  {sd:5.2f}  "
            f"{', '.join(f'{a:.2f}' for a in accs):<24}  {met:>6}  {ANCHORS.get(n_labels, '')}"
        )
    write_json(args, results)
    return 0


def write_json(args: argparse.Namespace, results: dict[int, list[dict]]) -> None:
    if args.json is None:
        return
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps({"args": vars(args), "results": results}, indent=2, default=str))
    tmp.replace(args.json)


if __name__ == "__main__":
    sys.exit(main())
