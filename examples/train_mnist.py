"""Train the seeds' VAE on MNIST with pyro-vae's Python API, then draw its figures.

    python examples/train_mnist.py --data-dir /path/to/data --epochs 10

``--data-dir`` holds (or receives, when online) torchvision's ``MNIST/raw`` files; it defaults to
``$PYRO_VAE_DATA``. The run directory gets ``config.json``, ``checkpoint.pt``, ``metrics.jsonl`` and
``figures/*.png``; ``pyro-vae evaluate RUN_DIR`` and the other sub-commands work on it as on any run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, train
from pyro_vae.plots import draw_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="MNIST location (default: $PYRO_VAE_DATA)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--run-dir", default="runs/mnist-example", help="where the run is written")
    args = p.parse_args()

    config = RunConfig(
        # continuous pixels in [0, 1] under a Bernoulli likelihood, as in the seeds; use
        # binarize="dynamic" for numbers comparable with the likelihood literature
        data=DataConfig(dataset="mnist", data_dir=args.data_dir, binarize="none"),
        # the seeds' 784-400-20 ReLU MLP, a diagonal Gaussian guide and a standard normal prior
        model=ModelConfig(latent_dim=20, network="mlp", hidden=(400,), likelihood="bernoulli"),
        train=TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-3, device=args.device),
    )
    run_dir = Path(args.run_dir)
    result = train(config, run_dir)  # resumable: train(config, run_dir, resume=True)
    for record in result.history:
        print(
            f"epoch {record['epoch']:3d}  train ELBO {record['train_elbo']:8.2f}  "
            f"test ELBO {record['test_elbo']:8.2f} nats/image  ({record['epoch_time']:.1f} s)"
        )
    figures = draw_all(result.model, result.dataset, result.history, run_dir)
    print(f"run written to {run_dir}; figures:")
    for path in figures:
        print(f"  {path}")


if __name__ == "__main__":
    main()
