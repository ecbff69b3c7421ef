"""What importing Lightning costs a process's training steps, side by side in one run.

Why the always-on CSV log is not Lightning's ``CSVLogger`` (pyro_vae/loggers.py): a process that has
imported Lightning trains more slowly afterwards. Two arms alternate, each round a fresh process
training pyro-vae for ``--epochs`` epochs on MNIST's first ``--train`` images (the seeds' MLP,
single-threaded); the ``lightning`` arm runs ``import lightning_fabric`` first, and with ``--freeze``
a third arm also calls ``gc.freeze()`` after it. Seconds per epoch are the trainer's ``epoch_time``.

    cd benchmarks && python bench_import.py --data-dir /path/with/MNIST/raw
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys
arm, data_dir, n, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import torch
torch.set_num_threads(1)
if arm != "plain":
    import lightning_fabric  # noqa: F401
if arm == "freeze":
    import gc
    gc.freeze()
from pyro_vae import train
from pyro_vae.config import DataConfig, RunConfig, TrainConfig
from pyro_vae.data import Dataset, load_dataset
ds = load_dataset(DataConfig(dataset="mnist", data_dir=data_dir))
ds = Dataset("subset", ds.train[:n], ds.test[:1000])
r = train(RunConfig(train=TrainConfig(epochs=epochs, device="cpu")), dataset=ds, progress=False)
print(json.dumps([h["epoch_time"] for h in r.history]))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="holds MNIST/raw (torchvision's layout)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train", type=int, default=12800)
    p.add_argument("--freeze", action="store_true", help="also the arm with gc.freeze()")
    args = p.parse_args()
    arms = ["plain", "lightning"] + (["freeze"] if args.freeze else [])
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    times: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm in arms if r % 2 == 0 else reversed(arms):
            cmd = [sys.executable, "-W", "ignore", "-c", CHILD, arm, args.data_dir]
            cmd += [str(args.train), str(args.epochs)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            times[arm] += json.loads(out.stdout.strip().splitlines()[-1])[1:]  # epoch 1 warms up
    print("# importing Lightning and the training steps of the same process")
    print(f"- machine: {cpu_model()}; {platform.platform()}; single-threaded")
    print(f"- command: python benchmarks/bench_import.py {' '.join(sys.argv[1:])}")
    print(f"- {args.rounds} rounds x {args.epochs - 1} timed epochs of {args.train} MNIST images\n")
    base = statistics.median(times["plain"])
    print("| arm | median s/epoch | vs plain |")
    print("|---|---|---|")
    for arm in arms:
        t = statistics.median(times[arm])
        print(f"| {arm} | {t:.3f} | {t / base:.3f}x |")


if __name__ == "__main__":
    main()
