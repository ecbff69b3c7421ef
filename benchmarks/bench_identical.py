"""Bit-identical results of two pyro-vae source trees: every model trained, evaluated, scored and
encoded with the same seed in each tree, the outputs compared byte for byte.

Each arm is a checkout (e.g. ``git archive <commit> | tar -x -C /tmp/old``), run in one process of
its own with that tree first on the path. Per case, each arm runs ``pyro-vae train`` (bundled 8x8
digits, small networks, 2 epochs, seed 0) and then ``evaluate --json``, ``score`` and ``encode`` on
its own run; compared are metrics.jsonl (less the timings),
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
    "vae-iaf-vamp": "--guide iaf --prior vamp --prior-opt num_pseudo=5",
    "vae-iwae-beta": "--objective iwae -k 3 --beta 0.5 --kl-anneal 1",
    "vae-fast-eager": "--fast eager",
    "hvae": "--model hvae --latent-dim2 2",
    "hvae-vamp": "--model hvae --prior vamp --prior-opt num_pseudo=4",
    "cvae": "--model cvae",
    "m2": "--model m2 --labels 100 --val-size 100 --aux-weight 10",
    "m1m2": "--model m1m2 --labels 100 --val-size 100 --m1-epochs 1 --latent-dim2 3",
    "adgm": "--model adgm --labels 100 --val-size 100 --model-opt aux_dim=3",
    "sdgm": "--model sdgm --labels 100 --val-size 100",
    "m2-resnet": "--model m2 --labels 100 --val-size 100 --network resnet --network-opt channels=4",
    "vae-pixelcnn": "--network pixelcnn --network-opt channels=8 layers=2 kernel=3",
}


def run(args: list[str]) -> str:
    """``pyro-vae ARGS`` in this process (the arm's tree is first on the path); its stdout."""
    import contextlib
    import io

    from pyro_vae.cli import main as cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(args)
    if code != 0:
        raise SystemExit(f"{shlex.join(args)} failed with exit code {code}")
    return out.getvalue()


def outputs(case: str, options: str, work: Path) -> dict[str, str]:
    """Digests of everything the case produces in this process's tree."""
    import numpy as np
    import torch

    run_dir = work / case
    args = ["train", *shlex.split(COMMON), *shlex.split(options)]
    run([*args, "--run-dir", str(run_dir), "--no-plots", "--no-progress"])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in metrics:
        record.pop("epoch_time", None)
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    evaluation = json.loads(
        run(["evaluate", str(run_dir), "--json", "--nll-samples", "20", "--limit", "100"])
    )
    evaluation.pop("run", None)  # the run directory's path
    table = work / f"{case}.csv"
    run(
        ["score", str(run_dir), "--limit", "100", "--nll-samples", "20", "--out", str(table)]
        + ["--regret-steps", "2", "--typicality-points", "50"]
    )
    enc = work / f"{case}.npz"
    run(["encode", str(run_dir), "--out", str(enc)])
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


def arm(tree: Path, cases: list[str], work: Path) -> dict[str, dict[str, str]]:
    """Every case's digests in ``tree``: one process with that tree first on the path."""
    work.mkdir(parents=True)
    out = work / "digests.json"
    env = dict(os.environ, PYTHONPATH=str(tree.resolve()), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-W", "ignore", __file__, "--arm-of", str(out), "--cases", *cases]
    subprocess.run(cmd, env=env, check=True, cwd=tree)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", type=Path, help="source tree of arm A (the baseline)")
    p.add_argument("--b", type=Path, help="source tree of arm B")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--arm-of", type=Path, help=argparse.SUPPRESS)  # the child process of an arm
    args = p.parse_args(argv)
    if args.arm_of is not None:
        digests = {c: outputs(c, CASES[c], args.arm_of.parent) for c in args.cases}
        args.arm_of.write_text(json.dumps(digests))
        return 0
    if args.a is None or args.b is None:
        p.error("give both arms: --a TREE --b TREE")
    print("== bench_identical: the same seed gives the same bits in arm A and arm B ==")
    print(f"machine: {platform.platform()}, {cpu_model()}, 1 thread, CPU")
    print(f"command: python {shlex.join(sys.argv)}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        a = arm(args.a, args.cases, Path(tmp) / "a")
        b = arm(args.b, args.cases, Path(tmp) / "b")
    different = 0
    for case in args.cases:
        bad = [k for k in a[case] if a[case][k] != b[case][k]]
        different += bool(bad)
        verdict = "identical" if not bad else "DIFFERENT: " + ", ".join(bad)
        print(f"{case:16s} {verdict}  [{CASES[case]}]")
    print(
        f"{len(args.cases) - different}/{len(args.cases)} cases bit-identical, compared: "
        f"{', '.join(a[args.cases[0]])} ({time.perf_counter() - t0:.0f} s)"
    )
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
