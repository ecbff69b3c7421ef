"""The semi-supervised experiment (``pyro-vae semi-supervised``): its table, figure and resumption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_vae import DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset
from pyro_vae.cli import main
from pyro_vae.errors import ConfigError
from pyro_vae.semi_supervised import (
    COLUMNS,
    FIGURE,
    RESULT,
    RESULTS,
    read_results,
    semi_supervised,
    summarise,
)

BASE = RunConfig(
    data=DataConfig("digits"),
    model=ModelConfig(latent_dim=4, hidden=(16,)),
    train=TrainConfig(epochs=2, batch_size=128, lr=3e-3, device="cpu"),
)
ARGS = ["--epochs", "2", "--hidden", "16", "--latent-dim", "4", "--batch-size", "128"]
ARGS += ["--lr", "3e-3", "--device", "cpu", "--no-progress"]


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_the_experiment_writes_one_row_per_run_and_a_figure(tmp_path: Path) -> None:
    rows = semi_supervised(
        BASE.replace(model={"model_options": {"val_labels": 10}}),
        tmp_path,
        models=("m2", "adgm"),
        budgets=(20, 40),
        subsets=2,
        log=None,
    )
    assert len(rows) == 8 and (tmp_path / FIGURE).stat().st_size > 0
    table = read_results(tmp_path / RESULTS)
    assert tuple(table[0]) == COLUMNS and table == rows
    assert {(r["model"], r["labels_used"], r["subset"]) for r in rows} == {
        (m, n, s) for m in ("m2", "adgm") for n in (20, 40) for s in (0, 1)
    }
    for r in rows:  # the budget holds the validation labels: 10 of 20 or of 40
        assert r["train_labels"] + r["val_labels"] == r["labels_used"] and r["val_labels"] == 10
        assert r["extra_val_labels"] == 0 and r["epochs"] == 2 and 0 <= r["test_accuracy"] <= 1
    # the row's accuracy is the kept model's, on the test set: the same run trained alone agrees
    from pyro_vae import train

    alone = train(
        BASE.replace(
            model={"model": "m2", "model_options": {"labels": 40, "val_labels": 10}},
            train={"seed": 1},
        ),
        progress=False,
    )
    data = alone.dataset
    row = next(r for r in rows if (r["model"], r["labels_used"], r["subset"]) == ("m2", 40, 1))
    assert row["test_accuracy"] == pytest.approx(alone.model.accuracy(data.test, data.test_labels))
    stats = {(s["model"], s["labels_used"]): s for s in summarise(rows)}
    assert stats["m2", 40]["subsets"] == 2


def test_the_experiment_resumes_after_a_kill(tmp_path: Path) -> None:
    argv = ["semi-supervised", "--models", "m2", "--budgets", "20", "40", "--subsets", "1"]
    argv += [*ARGS, "--epochs", "4"]
    straight = tmp_path / "straight"
    assert main([*argv, "--out", str(straight)]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae", *argv, "--out", str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = killed / "runs" / "m2-labels20-subset0" / RESULT
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the first run never finished"
    done_at = first.stat().st_mtime_ns
    second = killed / "runs" / "m2-labels40-subset0"
    assert not (second / RESULT).exists()  # killed before the second run's row
    assert main([*argv, "--out", str(killed)]) == 0
    assert first.stat().st_mtime_ns == done_at  # the finished run was not trained again
    assert without_time(read_results(killed / RESULTS)) == without_time(
        read_results(straight / RESULTS)
    )


def test_a_damaged_table_is_rebuilt_and_more_epochs_extend_the_runs(tmp_path: Path) -> None:
    rows = semi_supervised(BASE, tmp_path, models=("m2",), budgets=(20,), subsets=1, log=None)
    (tmp_path / RESULTS).write_text("model,dat")  # a table cut off mid-write
    again = semi_supervised(BASE, tmp_path, models=("m2",), budgets=(20,), subsets=1, log=None)
    assert again == rows and read_results(tmp_path / RESULTS) == rows
    longer = BASE.replace(train={"epochs": 3})
    extended = semi_supervised(longer, tmp_path, models=("m2",), budgets=(20,), subsets=1, log=None)
    assert extended[0]["epochs"] == 3 and len(extended) == 1
    metrics = (tmp_path / "runs" / "m2-labels20-subset0" / "metrics.jsonl").read_text()
    assert [json.loads(line)["epoch"] for line in metrics.splitlines()] == [1, 2, 3]
    # another experiment in the same folder is refused, not reported as this one
    other = longer.replace(model={"hidden": (8,)})
    with pytest.raises(ConfigError, match=r"other options or data \(model.hidden"):
        semi_supervised(other, tmp_path, models=("m2",), budgets=(20,), subsets=1, log=None)


def test_data_with_minus_one_labels_bring_their_own_budget(tmp_path: Path) -> None:
    data = load_dataset(DataConfig("digits"))
    mask = torch.zeros(data.train.shape[0], dtype=torch.bool)
    mask[::50] = True
    own = data.with_labelled(mask)
    rows = semi_supervised(BASE, tmp_path, budgets=(), subsets=2, dataset=own, log=None)
    assert [r["labels_used"] for r in rows] == [int(mask.sum())] * 2
    with pytest.raises(ConfigError, match="its 29 labelled rows are the budget; drop --budgets"):
        semi_supervised(BASE, tmp_path / "b", budgets=(20,), dataset=own, log=None)


def test_the_command_refuses_what_it_sets_itself(tmp_path: Path, capsys) -> None:
    out = ["--out", str(tmp_path)]
    for flags, message in (
        (["--model", "m2"], "pass --models instead"),
        (["--labels", "20"], "pass --budgets instead"),
        (["--seed", "3"], "pass --subsets"),
        (["--models", "vae"], "--model vae is not semi-supervised"),
        (["--m1-epochs", "1"], "--m1-epochs is not used by any of --models m2"),
        (["--budgets", "20", "--shard", "2/2"], "--shard 2/2"),
        (["--budgets", "20", "0"], "--budgets are numbers of labelled training images"),
    ):
        assert main(["semi-supervised", *out, *ARGS, *flags]) == 2
        assert message in capsys.readouterr().err, flags
