"""Data-parallel training against one process, side by side in one run: throughput and test ELBO.

Three arms train the same model on the same MNIST subset for the same number of epochs:

- ``1 process``: ``--devices 1``, batch B, with all cores' threads and with one thread;
- ``N processes, B each``: ``--devices N --batch-size B`` (the global batch grows to N*B: the usual
  way DDP scales, N times fewer steps per epoch);
- ``N processes, B/N each``: ``--devices N --batch-size B/N`` (the global batch stays B: the same
  updates as one process, up to the Monte Carlo noise).

The arms alternate epoch by epoch (each epoch a ``pyro-vae train --resume`` in fresh processes), so
machine noise falls on all of them. Time per epoch is the trainer's own ``epoch_time`` on rank 0:
the training steps, not the start of the processes, the data loading or the test evaluation.
Images/s counts the training images of an epoch over that time. On the CPU, Fabric gives each of N
processes 1/N of the cores; one process runs with all of them, and once with one thread.

    python benchmarks/bench_ddp.py --data-dir /path/with/MNIST/raw            # CPU, 2 processes
    python benchmarks/bench_ddp.py --data-dir DIR --device cuda --devices 2   # GPUs

The setting is the seeds' (784-400-20 MLP, Bernoulli likelihood, Adam 1e-3), batch 128.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

REPO = Path(__file__).resolve().parents[1]


def subset(args: argparse.Namespace, folder: Path) -> Path:
    """The first ``--train`` and ``--test`` MNIST images as a .npz file."""
    from torchvision import datasets

    tr = datasets.MNIST(args.data_dir, train=True, download=False)
    te = datasets.MNIST(args.data_dir, train=False, download=False)
    path = folder / "mnist-subset.npz"
    np.savez(
        path,
        x_train=tr.data[: args.train].numpy(),
        x_test=te.data[: args.test].numpy(),
    )
    return path


def epoch(arm: dict, run_dir: Path, k: int, data: Path, args: argparse.Namespace) -> dict:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR")
    }
    env["PYTHONPATH"] = str(REPO)
    if "threads" in arm:  # Fabric gives each of N processes cores/N threads itself
        env["OMP_NUM_THREADS"] = str(arm["threads"])
    cmd = [sys.executable, "-W", "ignore", "-m", "pyro_vae", "train", "--dataset", str(data)]
    cmd += ["--epochs", str(k), "--device", args.device, "--devices", str(arm["devices"])]
    cmd += ["--batch-size", str(arm["batch"]), "--run-dir", str(run_dir), "--seed", "0"]
    cmd += ["--no-plots", "--no-progress", *shlex.split(args.options)]
    if k > 1:
        cmd.append("--resume")
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{arm['name']}: pyro-vae failed:\n{out.stderr[-3000:]}")
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="holds MNIST/raw (torchvision's layout)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--devices", type=int, default=2, help="processes of the data-parallel arms")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train", type=int, default=12000, help="training images (a subset)")
    p.add_argument("--test", type=int, default=2000, help="test images")
    p.add_argument("--options", default="", help="more pyro-vae train options, quoted")
    args = p.parse_args()
    n, b = args.devices, args.batch_size
    cores = os.cpu_count() or 1
    arms = [
        {"name": f"1 process, {cores} threads", "devices": 1, "batch": b, "threads": cores},
        {"name": "1 process, 1 thread", "devices": 1, "batch": b, "threads": 1},
        {"name": f"{n} processes, {b} each", "devices": n, "batch": b},
        {"name": f"{n} processes, {b // n} each", "devices": n, "batch": b // n},
    ]
    t_start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        data = subset(args, Path(tmp))
        runs = {a["name"]: Path(tmp) / f"run{i}" for i, a in enumerate(arms)}
        records: dict[str, list[dict]] = {a["name"]: [] for a in arms}
        for k in range(1, args.epochs + 1):
            for arm in arms if k % 2 else reversed(arms):
                records[arm["name"]].append(epoch(arm, runs[arm["name"]], k, data, args))

    import torch

    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_model()
    print(f"# data-parallel training: {args.devices} processes against 1")
    print(f"- machine: {device}; {os.cpu_count()} CPU cores; {platform.platform()}")
    print(f"- torch {torch.__version__}; data: MNIST, first {args.train} training images")
    print(f"- command: python benchmarks/bench_ddp.py {' '.join(sys.argv[1:])}")
    print(f"- wall time {time.time() - t_start:.0f} s\n")
    print("| arm | global batch | s/epoch (median) | images/s | vs 1 process | test ELBO |")
    print("|---|---|---|---|---|---|")
    base = None
    for arm in arms:
        times = [r["epoch_time"] for r in records[arm["name"]][1:]]  # epoch 1 warms up
        t = statistics.median(times or [records[arm["name"]][0]["epoch_time"]])
        rate = args.train / t
        base = base or rate
        elbo = records[arm["name"]][-1]["test_elbo"]
        print(
            f"| {arm['name']} | {arm['devices'] * arm['batch']} | {t:.2f} | {rate:.0f} | "
            f"{rate / base:.2f}x | {elbo:.2f} |"
        )
    print(f"\ntest ELBO: nats per image after {args.epochs} epochs (rank 0's Monte Carlo estimate)")


if __name__ == "__main__":
    main()
