"""Bit-identical results of two pyro-vae source trees: every model trained, evaluated, scored and
encoded with the same seed in each tree, the outputs compared byte for byte.

Each arm is a checkout (e.g. ``git archive <commit> | tar -x -C /tmp/old``). Per case, both arms run
``pyro-vae train`` (bundled 8x8 digits, small networks, 2 epochs, seed 0) and then ``evaluate
--json``, ``score`` and ``encode`` on their own run; compared are metrics.jsonl (less the timings),
the SHA-256 of every tensor of the checkpoint's model state, the evaluation's JSON, the score table
and the encoding. A case whose outputs differ in any bit is reported as DIFFERENT.

    git archive 1e82a63 | tar -x -C /tmp/old
    python benchmarks/bench_identical.py --a /tmp/old --b .

Cut for a 2-core CPU: 8x8 digits, 2 epochs, hidden 32, 100 test points for evaluate/score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_model  # benchmarks/machine.py: scripts run from this folder

COMMON = "--dataset digits --epochs 2 --hidden 32 --latent-dim 4 --batch-size 64 --seed 0"
CASES = {
    "vae": "",
    "vae-iaf-vamp": "--guide iaf --prior vamp --prior-opt components=5",
    "vae-iwae-beta": "--objective iwae -k 3 --beta 0.5 --kl-anneal 1",
    "vae-fast-eager": "--fast eager",
    "hvae": "--model hvae --latent-dim2 2",
    "hvae-vamp": "--model hvae --prior vamp --prior-opt components=4",
    "cvae": "--model cvae",
    "m2": "--model m2 --labels 100 --val-size 100 --aux-weight 10",
    "m1m2": "--model m1m2 --labels 100 --val-size 100 --m1-epochs 1 --latent-dim2 3",
}


def run(tree: Path, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-W", "ignore", "-m", "pyro_vae", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {shlex.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


def outputs(tree: Path, case: str, options: str, work: Path) -> dict[str, str]:
    """Digests of everything the case produces in ``tree``."""
    import numpy as np
    import torch

    run_dir = work / case
    args = ["train", *shlex.split(COMMON), *shlex.split(options)]
    run(tree, [*args, "--run-dir", str(run_dir), "--no-plots", "--no-progress"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in metrics:
        record.pop("epoch_time", None)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    evaluation = json.loads(
        run(tree, ["evaluate", str(run_dir), "--json", "--nll-samples", "20", "--limit", "100"])
    )
    evaluation.pop("run", None)  # the run directory's path
    table = work / f"{case}.csv"
    run(
        tree,
        [
            "score",
            str(run_dir),
            "--limit",
            "100",
            "--nll-samples",
            "20",
            "--out",
            str(table),
            "--regret-steps",
            "2",
            "--typicality-points",
            "50",
        ],
    )
    enc = work / f"{case}.npz"
    run(tree, ["encode", str(run_dir), "--out", str(enc)])
    arrays = np.load(enc)
    return {
        "metrics": json.dumps(metrics, sort_keys=True),
        "model state": digest.hexdigest(),
        "evaluate": json.dumps(evaluation, sort_keys=True),
        "score": hashlib.sha256(table.read_bytes()).hexdigest(),
        "encode": hashlib.sha256(
            b"".join(k.encode() + arrays[k].tobytes() for k in sorted(arrays))
        ).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, required=True, help="source tree of arm A (the baseline)")
    p.add_argument("--b", type=Path, required=True, help="source tree of arm B")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = p.parse_args(argv)
    print("== bench_identical: the same seed gives the same bits in arm A and arm B ==")
    print(f"machine: {platform.platform()}, {cpu_model()}, 1 thread, CPU")
    print(f"command: python {shlex.join(sys.argv)}")
    different = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            t0 = time.perf_counter()
            a = outputs(args.a, case, CASES[case], Path(tmp) / "a")
            b = outputs(args.b, case, CASES[case], Path(tmp) / "b")
            bad = [k for k in a if a[k] != b[k]]
            different += bool(bad)
            verdict = "identical" if not bad else "DIFFERENT: " + ", ".join(bad)
            print(f"{case:16s} {verdict}  ({time.perf_counter() - t0:.0f} s)  [{CASES[case]}]")
    print(f"{len(args.cases) - different}/{len(args.cases)} cases bit-identical")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
