"""Per-epoch training time of two pyro-vae source trees, side by side in one run (A/B).

Each arm is a checkout of pyro-vae (e.g. ``git worktree add /tmp/old <commit>``). The two arms alternate
epoch by epoch, each epoch a ``pyro-vae train --resume`` of its own run directory in a fresh process
with that tree first on ``PYTHONPATH``, so machine noise falls on both. The time per epoch is the
trainer's own ``epoch_time`` (training steps only; not the import, the data loading, the test
evaluation or the checkpoint). Single-threaded (``OMP_NUM_THREADS=1``) unless ``--threads``.

    git worktree add /tmp/old ffac5ae
    python benchmarks/bench_ab.py --a /tmp/old --b . --data-dir /path/with/MNIST/raw --epochs 6

The setting is the seeds' (MNIST, 784-400-20 MLP, Bernoulli likelihood, batch 128, Adam 1e-3).
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
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder


def epoch(tree: Path, run_dir: Path, k: int, args: argparse.Namespace) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-W", "ignore", "-m", "pyro_vae", "train"]
    cmd += ["--dataset", "mnist", "--data-dir", args.data_dir, "--epochs", str(k)]
    cmd += ["--device", "cpu", "--run-dir", str(run_dir), "--no-plots", "--no-progress"]
    cmd += ["--seed", "0"] + shlex.split(args.options)
    if k > 1:
        cmd.append("--resume")
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=tree)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[k - 1])
    assert record["epoch"] == k
    return float(record["epoch_time"]), float(record["test_elbo"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, required=True, help="source tree of arm A (the baseline)")
    p.add_argument("--b", type=Path, required=True, help="source tree of arm B")
    p.add_argument("--data-dir", required=True, help="directory with MNIST/raw")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--options", default="", help="more train options for both arms, one string")
    args = p.parse_args(argv)
    print("== bench_ab: pyro-vae train() per-epoch time, arm B against arm A ==")
    print(f"machine: {platform.platform()}, {cpu_model()}, threads {args.threads}")
    print(f"command: python {shlex.join(sys.argv)}")
    for arm, tree in (("A", args.a), ("B", args.b)):
        rev = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "pyro_vae"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        print(
            f"arm {arm}: {tree.resolve()} at {rev}{' (with uncommitted changes)' if dirty else ''}"
        )
    times: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1, args.epochs + 1):
            # alternate which arm goes first, so a slow spell does not always hit the same arm
            order = ("A", "B") if k % 2 else ("B", "A")
            row = {}
            for arm in order:
                tree = args.a if arm == "A" else args.b
                t, elbo = epoch(tree, Path(tmp) / arm, k, args)
                times[arm].append(t)
                row[arm] = (t, elbo)
            print(
                f"epoch {k}: A {row['A'][0]:.2f} s (test ELBO {row['A'][1]:.2f}), "
                f"B {row['B'][0]:.2f} s (test ELBO {row['B'][1]:.2f}), "
                f"B/A {row['B'][0] / row['A'][0]:.3f}",
                flush=True,
            )
    ma, mb = statistics.median(times["A"]), statistics.median(times["B"])
    ratios = sorted(b / a for a, b in zip(times["A"], times["B"]))
    print(
        f"median seconds per epoch: A {ma:.2f}, B {mb:.2f}; ratio B/A {mb / ma:.3f} "
        f"(per-epoch ratios {ratios[0]:.3f}..{ratios[-1]:.3f}, median "
        f"{statistics.median(ratios):.3f})"
    )


if __name__ == "__main__":
    main()
