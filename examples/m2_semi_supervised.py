"""Semi-supervised learning with M2 (Kingma et al. 2014): label 50 of the bundled 8x8 digits, learn
from all of them.

Trains M2 on scikit-learn's digits with 50 class-balanced labels (the rest unlabelled, the label summed
out by enumeration), 10 of which pick the reported epoch (``--val-labels``: every label used is one of
the 50), reports the test accuracy of q(y|x) next to the same classifier trained on the same 40 labels
alone (selected on the same 10), and draws conditional samples and style transfer. About a minute on
one CPU core.

    python examples/m2_semi_supervised.py [--labels 50] [--val-labels 10] [--epochs 20]

The same from the command line:

    pyro-vae train --model m2 --dataset digits --labels 50 --val-labels 10 --epochs 20 \
        --hidden 128 --latent-dim 8 --batch-size 128 --lr 3e-3 --run-dir runs/m2-digits
    pyro-vae evaluate runs/m2-digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, train
from pyro_vae.models.m2 import split_labels, supervised_baseline
from pyro_vae.plots import draw_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labels", type=int, default=50)
    p.add_argument("--val-labels", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/m2-digits"))
    args = p.parse_args()

    config = RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(
            "m2",
            latent_dim=8,
            hidden=(128,),
            model_options={"labels": args.labels, "val_labels": args.val_labels},
        ),
        train=TrainConfig(epochs=args.epochs, batch_size=128, lr=3e-3, seed=args.seed),
    )
    result = train(config, progress=True)
    model, data = result.model, result.dataset
    best = max(result.history, key=lambda r: r["val_accuracy"])
    print(
        f"M2, {best['labels_used']} labels used: test accuracy "
        f"{model.accuracy(data.test, data.test_labels):.3f} (epoch {best['epoch']}, picked by "
        f"validation accuracy {best['val_accuracy']:.3f} on {args.val_labels} of the labels)"
    )

    # the plan's own split, drawn again: the same rows for the classifier trained on labels alone
    split = split_labels(
        data.train_labels.cpu(), 10, args.seed, budget=args.labels, val_labels=args.val_labels
    )
    lab, val = split.labelled.to(data.device), split.val.to(data.device)
    alone = supervised_baseline(
        model,
        data.train[lab],
        data.train_labels[lab],
        data.train[val],
        data.train_labels[val],
        data.test,
        data.test_labels,
    )
    print(f"the same classifier on the same {args.labels} labels alone: test accuracy {alone:.3f}")

    for path in draw_all(model, data, result.history, args.out):
        print(path)


if __name__ == "__main__":
    main()
