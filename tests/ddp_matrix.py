"""Run by tests/test_distributed.py: every model and objective trains data-parallel.

``python tests/ddp_matrix.py DATA.npz OUT.json`` trains each configuration below for one epoch with
``--devices 2`` on CPU. The first ``train`` starts rank 1 (Fabric re-runs this script), and both
processes then go through the same list, so one pair of processes trains them all. Rank 0 writes
each run's last record to ``OUT.json``.
"""

from __future__ import annotations

import json
import math
import sys

from pyro_vae import train
from pyro_vae.cli import train_config

CONFIGURATIONS = {
    "hvae": ["--model", "hvae"],
    "cvae iwae": ["--model", "cvae", "--objective", "iwae", "-k", "2"],
    "m1m2": ["--model", "m1m2", "--labels", "20", "--val-size", "20", "--epochs", "2"],
    "vae dreg": ["--objective", "dreg", "-k", "2"],
    "vae renyi": ["--objective", "renyi", "-k", "2", "--alpha", "0.5"],
    "vae jit-elbo": ["--objective", "jit-elbo"],
    "vae meanfield kl-anneal": ["--objective", "meanfield", "--kl-anneal", "2"],
    "vae planar vamp": ["--guide", "planar", "--prior", "vamp"],
}


def main() -> None:
    data, out = sys.argv[1], sys.argv[2]
    base = ["--dataset", data, "--hidden", "16", "--latent-dim", "2", "--batch-size", "32"]
    base += ["--device", "cpu", "--devices", "2", "--epochs", "1"]
    records = {}
    for name, extra in CONFIGURATIONS.items():
        result = train(train_config([*base, *extra]), progress=False)
        last = result.history[-1]
        assert math.isfinite(last["test_elbo"]), (name, last)
        records[name] = last
        rank = result.rank
    if rank == 0:
        with open(out, "w") as f:
            json.dump(records, f)


if __name__ == "__main__":
    main()
