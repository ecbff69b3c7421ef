"""Disentanglement on the rendered dSprites: beta-VAE (beta 1 and 4), beta-TCVAE (beta 6),
FactorVAE and DIP-VAE-I, several seeds each, every metric of :mod:`pyro_vae.disentangle`.

Every arm is the same VAE (MLP encoder 4096-H-H-10 with ReLU, mirrored decoder, 10 latents,
Bernoulli likelihood, diagonal Gaussian guide, standard normal prior), trained by
:func:`pyro_vae.train` with Adam (lr 1e-3), batch 64, on the same random subset of ``--train-size``
rendered dSprites for ``--epochs`` epochs; only the objective changes:

- beta-VAE: the Monte Carlo ELBO with ``--beta`` 1 and 4 (Higgins et al. 2017);
- beta-TCVAE: ``tcvae`` with beta_tc 6, alpha = gamma = 1, the minibatch-stratified estimator
  (Chen et al. 2018);
- FactorVAE: ``factorvae`` with gamma 35 (Kim and Mnih 2018), discriminator ``--disc-hidden``;
- DIP-VAE-I: ``dipvae`` with lambda_od 10, lambda_d 100 (Kumar et al. 2018).

Scored on the first ``--points`` held-out test images (DCI on the first ``--dci-points``: its
gradient boosted trees over 40 orientation classes take minutes on a CPU) (MIG with disentanglement_lib's 20-bin
estimator and with Chen's posterior estimator, SAP, DCI) and on ``--votes`` freshly drawn
factor-matched batches (FactorVAE and beta-VAE scores); reconstruction is the Bernoulli negative
log-likelihood of the test images at the mean code (nats per image). A traversal figure and the
latent x factor MI matrix of each arm's first seed go to ``--out``.

The CPU budget is far below the papers' (Chen et al.: ~50 epochs of all 737,280 images on a GPU),
and disentanglement_lib's evaluation sizes (10000/5000 points and votes) are cut to ``--points`` and
``--votes``; the question is the ordering of the methods at equal budget, with the spread over seeds.

    nice -n 15 python benchmarks/bench_disentangle.py            # the CPU budget
    python benchmarks/bench_disentangle.py --train-size 737280 --epochs 30 --hidden 1200 \\
        --points 10000 --dci-points 10000 --votes 10000 5000 --seeds 0 1 2 3 4 --device cuda   # a GPU budget
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

import pyro_vae
from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset, train
from pyro_vae import disentangle as dis

#: arm -> (objective, objective options, --beta)
ARMS: dict[str, tuple[str, dict, float]] = {
    "beta-VAE b=1": ("elbo", {}, 1.0),
    "beta-VAE b=4": ("elbo", {}, 4.0),
    "beta-TCVAE b=6": ("tcvae", {"beta_tc": 6.0, "estimator": "mss"}, 1.0),
    "FactorVAE g=35": ("factorvae", {"gamma": 35.0}, 1.0),
    "DIP-VAE-I": ("dipvae", {"lambda_od": 10.0, "variant": "i"}, 1.0),
}
METRICS = (
    "mig",
    "mig_posterior",
    "sap",
    "dci_disentanglement",
    "dci_completeness",
    "dci_informativeness",
    "factor_vae_score",
    "beta_vae_score",
    "recon_nll",
    "train_s",
)


def recon_nll(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        p = model.reconstruct(x).clamp(1e-6, 1 - 1e-6)
        nll = -(x * p.log() + (1 - x) * (1 - p).log()).reshape(x.shape[0], -1).sum(1)
    return float(nll.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--disc-hidden", type=int, nargs="+", default=[256, 256, 256])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--dci-points", type=int, default=300)
    ap.add_argument("--votes", type=int, nargs=2, default=[100, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/out_disentangle")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.node()} {cpu_model()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, device {args.device}, "
        f"{args.threads} thread(s)"
    )
    print(f"# command: {command}")
    data_cfg = DataConfig(
        dataset="dsprites",
        dataset_options={"size": args.train_size, "test_size": args.test_size},
    )
    t0 = time.time()
    data = load_dataset(data_cfg)
    print(
        f"# data: {args.train_size} training images, {args.test_size} test, rendered in "
        f"{time.time() - t0:.0f} s",
        flush=True,
    )
    x_eval = data.test[: args.points]
    results: dict[str, list[dict[str, float]]] = {}
    log = out / "runs.jsonl"
    for arm in args.arms:
        objective, options, beta = ARMS[arm]
        if objective == "factorvae":
            options = {**options, "disc_hidden": tuple(args.disc_hidden)}
        for seed in args.seeds:
            config = RunConfig(
                data=data_cfg,
                model=ModelConfig(latent_dim=10, hidden=(args.hidden, args.hidden)),
                train=TrainConfig(
                    epochs=args.epochs,
                    batch_size=64,
                    lr=1e-3,
                    objective=objective,
                    objective_options=options,
                    beta=beta,
                    seed=seed,
                    device=args.device,
                ),
            )
            t = time.time()
            result = train(config, progress=False, dataset=data)
            train_s = time.time() - t
            model = result.model.eval()
            scores = dis.disentanglement(
                model,
                data,
                num_points=args.points,
                dci_points=args.dci_points,
                num_votes=tuple(args.votes),
                seed=seed,
            )
            scores["recon_nll"] = recon_nll(model, x_eval.to(args.device))
            scores["train_s"] = train_s
            scores["eval_s"] = time.time() - t - train_s
            results.setdefault(arm, []).append(scores)
            with open(log, "a") as f:
                f.write(json.dumps({"arm": arm, "seed": seed, **scores}) + "\n")
            print(
                f"{arm:16s} seed {seed}: " + " ".join(f"{k}={v:.3f}" for k, v in scores.items()),
                flush=True,
            )
            if seed == args.seeds[0]:
                slug = "".join(c if c.isalnum() else "-" for c in arm.lower())
                mi = dis.mutual_information_matrix(
                    model.latent_mean(x_eval.to(args.device)).detach().cpu().numpy(),
                    data.factors.test_factors[: args.points],
                )
                names = data.factors.factor_names
                dis.mi_figure(mi, names, out / f"mi_{slug}.png")
                dis.traversal_figure(model, x_eval, mi, names, out / f"traversal_{slug}.png")
    print()
    print(f"| arm | {' | '.join(METRICS)} |")
    print("|---|" + "---|" * len(METRICS))
    for arm, runs in results.items():
        cells = []
        for m in METRICS:
            v = np.array([r[m] for r in runs])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0:.3f}")
        print(f"| {arm} (n={len(runs)}) | {' | '.join(cells)} |")
    print(f"\n# mean ± standard deviation over seeds {args.seeds}; pyro-vae {pyro_vae.__version__}")


if __name__ == "__main__":
    main()
