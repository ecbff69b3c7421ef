"""How long a serving command takes against importing torch and Pyro, side by side in one run.

A trained run is served by a fresh process each time (``pyro-vae sample RUN -n 16``, ``pyro-vae
encode RUN``): what it costs beyond ``python -c "import torch, pyro"`` is what pyro-vae imports and
loads. Each arm is a fresh process, timed wall clock; the arms alternate round by round (so a load
change on a shared machine hits every arm alike) and the median of ``--rounds`` is reported, with
its ratio to the import of torch and Pyro. Targets (issue 19): sample and encode <= 1.5x,
``import pyro_vae`` <= 1.1x, ``pyro-vae train --epochs 1 --no-plots`` on the digits <= 2x.

    cd benchmarks && python bench_serve.py            # the digits model (8x8), CPU
    cd benchmarks && python bench_serve.py --rounds 5 # more rounds on a noisy machine
    cd benchmarks && python bench_serve.py --before /path/to/older/checkout  # and its arms too

The model is the default VAE trained for one epoch on scikit-learn's 8x8 digits (trained once,
before the timing); ``encode`` encodes the run's own test split (360 images), which loads the
digits, and ``--data FILE`` rows of a small .npz.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARM = "pyro-vae train --epochs 1 --no-plots"
TARGETS = {
    "import pyro_vae": 1.1,
    "pyro-vae sample RUN -n 16": 1.5,
    "pyro-vae encode RUN": 1.5,
    "pyro-vae encode RUN --data FILE": 1.5,
    TRAIN_ARM: 2.0,
}


def _train(cli: list[str], run_dir: Path | str, quiet: str) -> list[str]:
    """``pyro-vae train`` of the default VAE on the digits for one epoch into ``run_dir``; ``quiet``
    is the flag that silences it in that tree (an older checkout has --no-progress, not --quiet)."""
    flags = ["--dataset", "digits", "--epochs", "1", "--no-plots", quiet, "--run-dir", str(run_dir)]
    return [*cli, "train", *flags]


def _serve_arms(cli: list[str], run: Path, tag: str) -> dict[str, list[str]]:
    """The sample and encode arms on ``run``, writing files named with ``tag``."""
    return {
        "pyro-vae sample RUN -n 16": [*cli, "sample", str(run), "-n", "16", "--out", f"s{tag}.png"],
        "pyro-vae encode RUN": [*cli, "encode", str(run), "--out", f"e{tag}.npz"],
    }


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="another checkout of pyro-vae (e.g. before this change): its sample and encode arms "
        "too, on a run it trains itself",
    )
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    py = sys.executable
    cli = [py, "-m", "pyro_vae"]
    work = Path(tempfile.mkdtemp(prefix="bench_serve."))
    try:
        run = work / "run"
        subprocess.run(
            _train(cli, run, "--quiet"), env=env, cwd=work, check=True, stdout=subprocess.DEVNULL
        )
        import numpy as np

        rng = np.random.default_rng(0)
        np.savez(work / "new.npz", x=rng.random((200, 1, 8, 8), dtype=np.float32))
        arms = {
            'python -c "import torch, pyro"': [py, "-c", "import torch, pyro"],
            "import pyro_vae": [py, "-c", "import pyro_vae"],
            **_serve_arms(cli, run, ""),
            "pyro-vae encode RUN --data FILE": [*cli, "encode", str(run), "--data", "new.npz"]
            + ["--out", "f.npz"],
            TRAIN_ARM: _train(cli, "again", "--quiet"),
        }
        envs = {name: env for name in arms}
        if args.before is not None:
            old = dict(env, PYTHONPATH=str(args.before.resolve()))
            old_run = work / "old-run"
            subprocess.run(
                _train(cli, old_run, "--no-progress"),
                env=old,
                cwd=work,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            theirs = {
                **_serve_arms(cli, old_run, "0"),
                TRAIN_ARM: _train(cli, "again", "--no-progress"),
            }
            before = {f"before: {name}": cmd for name, cmd in theirs.items()}
            arms.update(before)
            envs.update({name: old for name in before})
        times: dict[str, list[float]] = {name: [] for name in arms}
        t_start = time.perf_counter()
        for r in range(args.rounds):
            order = list(arms) if r % 2 == 0 else list(reversed(arms))
            for name in order:
                shutil.rmtree(work / "again", ignore_errors=True)
                times[name].append(_run(arms[name], envs[name], work))
        wall = time.perf_counter() - t_start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times['python -c "import torch, pyro"'])
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()}, Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{args.rounds} rounds, arms alternating, fresh processes, wall clock ({wall:.0f} s)")
    print("command: cd benchmarks && python bench_serve.py " + " ".join(sys.argv[1:]))
    print()
    print("| arm | median s | all s | vs import torch, pyro | target |")
    print("|---|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f"<= {target}x " + ("met" if med / base <= target else "MISSED")
        )
        runs = " ".join(f"{t:.2f}" for t in ts)
        print(f"| `{name}` | {med:.2f} | {runs} | {med / base:.2f}x | {verdict} |")


if __name__ == "__main__":
    main()
