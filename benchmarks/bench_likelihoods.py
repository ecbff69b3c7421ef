"""Likelihoods and decoders for 8-bit images: test bits per dimension, active units, samples, OOD.

For 8-bit MNIST and Fashion-MNIST (``--binarize none``: pixels k/255), four VAEs (20 latents):

- ``gaussian-mlp``: 784-400-20 MLP, Gaussian with a learned scale per pixel, trained and scored on
  uniformly dequantized data y = (k + u) / 256 (one fixed draw of u): not a distribution over the
  8-bit data, so its bits/dim are the dequantization bound -log p(y) / (D ln 2) + 8 (Theis et al.
  2016), an upper bound on the discrete model's, and the complexity score is refused for it;
- ``dlogistic-mlp``: the same MLP, discretized logistic per pixel;
- ``mixture-resnet``: residual conv encoder/decoder, mixture of 10 discretized logistics per pixel;
- ``pixelcnn``: residual conv encoder, PixelCNN decoder (gated masked convolutions conditioned on z),
  mixture of 5 discretized logistics.

Free bits (``--free-bits`` nats per latent, Kingma et al. 2016) and KL warm-up (``--kl-anneal``)
against posterior collapse, for the models named by ``--free-bits-arms`` (default the PixelCNN).
Training objective only: every number reported is the plain ELBO or log p(x).

Per model: test bits/dim from the ELBO and from log p(x) by importance sampling (K samples), active
units (Burda et al. 2016), a grid of samples x ~ p(x|z), z ~ p(z) (PixelCNN: drawn pixel by pixel).
OOD in both directions (Fashion-MNIST model vs MNIST test images, MNIST model vs Fashion-MNIST): AUROC
of the raw log p(x) and of the complexity-corrected score (Serra et al. 2020), outliers positive.

CPU budget (shared 2-core machine): subsets and few epochs, printed. A GPU budget:

    python benchmarks/bench_likelihoods.py --data-dir DATA --device cuda --train-images 60000 \\
        --conv-train-images 60000 --epochs 50 --conv-epochs 30 --test-images 10000 --k 1000 --conv-k 200
"""

from __future__ import annotations

import argparse
import json
import math
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
from pyro_vae.evaluate import report
from pyro_vae.images import _save_grid
from pyro_vae.nn import observation
from pyro_vae.scores import detection_metrics, score
from pyro_vae.units import LN2

ARMS = {
    "gaussian-mlp": dict(
        network="mlp",
        hidden=(400,),
        likelihood="gaussian",
        likelihood_options={"scale": 0.1, "learn_scale": True},
    ),
    "dlogistic-mlp": dict(network="mlp", hidden=(400,), likelihood="discretized-logistic"),
    "mixture-resnet": dict(
        network="resnet",
        network_options={"channels": 16, "blocks": 1, "levels": 2},
        hidden=(128,),
        likelihood="logistic-mixture",
        likelihood_options={"components": 10},
    ),
    "pixelcnn": dict(
        network="pixelcnn",
        network_options={"channels": 16, "layers": 4, "kernel": 5, "blocks": 1, "levels": 2},
        hidden=(128,),
        likelihood="logistic-mixture",
        likelihood_options={"components": 5},
    ),
}
CONV = {"mixture-resnet", "pixelcnn"}
DEQUANTIZED = {"gaussian-mlp"}


def subset(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx]


def dequantize(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(k + u) / 256 for x = k / 255, u ~ U[0, 1): one fixed draw."""
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    return (torch.round(x * 255) + u) / 256


def fit(arm: str, data, args):
    conv = arm in CONV
    n_train = args.conv_train_images if conv else args.train_images
    epochs = args.conv_epochs if conv else args.epochs
    train_x = subset(data.train, n_train, 0)
    test_x = data.test[: args.test_images]
    if arm in DEQUANTIZED:
        train_x, test_x = dequantize(train_x, 1), dequantize(test_x, 2)
    ds = replace(data, train=train_x, test=test_x, train_labels=None, test_labels=None)
    extra = {}
    if arm in args.free_bits_arms:
        extra = {"free_bits": args.free_bits}
        if args.kl_anneal:
            extra.update(kl_anneal=args.kl_anneal, kl_anneal_start=0.1)
    config = RunConfig(
        data=DataConfig(data.name),
        model=ModelConfig(latent_dim=20, **ARMS[arm]),
        train=TrainConfig(
            epochs=epochs, batch_size=128, lr=1e-3, seed=0, device=args.device, **extra
        ),
    )
    t0 = time.perf_counter()
    result = train(config, progress=False, dataset=ds)
    return result.model, ds, n_train, epochs, time.perf_counter() - t0


@torch.no_grad()
def sample_grid(model, path: Path, n: int = 16) -> None:
    """x ~ p(x|z), z ~ p(z): real draws of the likelihood (pixel by pixel for the PixelCNN)."""
    model.eval()
    z = model.prior().sample((n,))
    x = observation(model.decoder, model.likelihood, z).sample()
    _save_grid(
        x.cpu(), nrow=int(math.sqrt(n)), path=path, title=f"{path.stem}: x ~ p(x|z), z ~ p(z)"
    )
    if model.network != "pixelcnn":  # greedy decoding of a PixelCNN would cost another H x W passes
        means = path.with_name(path.stem.replace("samples", "means") + ".png")
        _save_grid(
            model.decode_mean(z).cpu(), nrow=int(math.sqrt(n)), path=means, title="E[x|z], z ~ p(z)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--conv-train-images", type=int, default=4000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--conv-epochs", type=int, default=2)
    p.add_argument("--test-images", type=int, default=300)
    p.add_argument("--k", type=int, default=64, help="importance samples, MLP models")
    p.add_argument("--conv-k", type=int, default=16, help="importance samples, conv models")
    p.add_argument("--free-bits", type=float, default=0.25, help="KL floor per latent (nats)")
    p.add_argument(
        "--free-bits-arms",
        nargs="*",
        default=["pixelcnn"],
        choices=list(ARMS),
        help="the models trained with --free-bits (and --kl-anneal)",
    )
    p.add_argument("--kl-anneal", type=int, default=0, help="KL warm-up epochs, from weight 0.1")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="likelihood_results", help="figures and JSON go here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {' '.join(map(shlex.quote, sys.argv))}")
    print(
        f"# machine: {cpu_model()}, {platform.machine()}, torch {torch.__version__}, threads "
        f"{args.threads}, device {args.device}; pyro-vae {pyro_vae.__version__}",
        flush=True,
    )
    datasets = {}
    for name in args.datasets:
        d = load_dataset(DataConfig(name, data_dir=args.data_dir, binarize="none"))
        k = d.test * 255
        assert float((k - k.round()).abs().max()) < 1e-4, f"{name} is not 8-bit k/255"
        datasets[name] = d
    other = {a: b for a, b in zip(args.datasets, reversed(args.datasets))}
    rows = []
    for name, data in datasets.items():
        for arm in args.arms:
            torch.manual_seed(0)
            model, ds, n_train, epochs, seconds = fit(arm, data, args)
            model.eval()
            kk = args.conv_k if arm in CONV else args.k
            x_in = ds.test
            x_out = datasets[other[name]].test[: args.test_images]
            if arm in DEQUANTIZED:
                x_out = dequantize(x_out, 3)
            dims = x_in[0].numel()
            offset = 8.0 if arm in DEQUANTIZED else 0.0  # dequantization: + log2(256) per dim
            t0 = time.perf_counter()
            rep = report(model, x_in, stats_samples=4)
            which = ("log_px",) if arm in DEQUANTIZED else ("log_px", "complexity")
            s_in = score(model, x_in, scores=which, num_samples=kk, batch_size=64)
            s_out = score(model, x_out, scores=which, num_samples=kk, batch_size=64)
            auroc = {k: v["auroc"] for k, v in detection_metrics(s_in, s_out).items()}
            row = {
                "data": name,
                "model": arm,
                "train_images": n_train,
                "epochs": epochs,
                "train_s": round(seconds, 1),
                "eval_s": round(time.perf_counter() - t0, 1),
                "k": kk,
                "elbo_bpd": -rep["test_elbo"] / (dims * LN2) + offset,
                "log_px_bpd": float(-s_in["log_px"].mean() / (dims * LN2) + offset),
                "log_px_nats": float(s_in["log_px"].mean()),
                "active_units": rep["active_units"],
                "ood": other[name],
                "auroc_log_px": auroc["log_px"],
                "auroc_complexity": auroc.get("complexity"),
                "bpd_in_key": rep.get("test_elbo_bpd", rep.get("bits_per_dim")),
            }
            t1 = time.perf_counter()
            model.network = ARMS[arm]["network"]
            sample_grid(model, out / f"samples_{name}_{arm}.png")
            row["sample_s"] = round(time.perf_counter() - t1, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(
        "\n| data | model | train imgs x epochs | test bits/dim ELBO | test bits/dim log p(x) (K) "
        "| active units /20 | OOD set | AUROC log p(x) | AUROC complexity |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        c = "refused (density)" if r["auroc_complexity"] is None else f"{r['auroc_complexity']:.3f}"
        print(
            f"| {r['data']} | {r['model']} | {r['train_images']} x {r['epochs']} | "
            f"{r['elbo_bpd']:.3f} | {r['log_px_bpd']:.3f} ({r['k']}) | {r['active_units']} | "
            f"{r['ood']} | {r['auroc_log_px']:.3f} | {c} |"
        )


if __name__ == "__main__":
    main()
