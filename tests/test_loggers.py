"""Experiment logs: the always-on CSV log, resume, the optional loggers, and check_loggers' errors."""

from __future__ import annotations

import csv
import importlib.machinery
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest

from pyro_vae import ConfigError
from pyro_vae import loggers as loggers_module
from pyro_vae.loggers import LOGGERS, check_loggers, hyperparameters, open_loggers

from .conftest import tiny_config


def record(epoch: int, **extra: float) -> dict:
    """A record as the training loop writes it; values differ per epoch so rows can be told apart."""
    return {
        "epoch": epoch,
        "train_elbo": -100.0 - epoch,
        "test_elbo": -90.0 - epoch / 2,
        "epoch_time": 0.25 * epoch,
        **extra,
    }


def read_csv(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = run / "logs" / "csv" / "metrics.csv"
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    with open(path, newline="") as f:
        return lines, list(csv.DictReader(f))


def log_epochs(run: Path, epochs: range, names: tuple[str, ...] = (), **kw: object) -> None:
    with open_loggers(names, run, tiny_config(), **kw) as run_loggers:
        for epoch in epochs:
            run_loggers.log(record(epoch), epoch)


def test_csv_log_rows_and_hyperparameters(tmp_path: Path) -> None:
    import yaml

    config = tiny_config(lr=0.005)
    run_loggers = open_loggers((), tmp_path, config)
    assert len(run_loggers.loggers) == 1
    for epoch in (1, 2, 3):
        run_loggers.log(record(epoch), epoch)
    run_loggers.close()

    lines, rows = read_csv(tmp_path)
    assert len(rows) == 3 and len(lines) == 4
    assert set(rows[0]) == {"step", "train_elbo", "test_elbo", "epoch_time"}  # epoch is the step
    for epoch, row in zip((1, 2, 3), rows):
        assert int(row["step"]) == epoch
        for key, value in record(epoch).items():
            if key != "epoch":
                assert float(row[key]) == pytest.approx(value)

    hparams = yaml.safe_load((tmp_path / "logs" / "csv" / "hparams.yaml").read_text())
    assert hparams == hyperparameters(config)
    assert hparams["train.lr"] == 0.005
    assert hparams["model.hidden"] == "[32]"  # tuples become JSON text
    assert hparams["train.device"] == "cpu"


def test_resume_continues_the_csv_file(tmp_path: Path) -> None:
    log_epochs(tmp_path, range(1, 4))
    log_epochs(tmp_path, range(4, 6), resume=True)

    lines, rows = read_csv(tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert len(lines) == 6 and lines.count(lines[0]) == 1  # one header
    assert [float(r["train_elbo"]) for r in rows] == [-101.0, -102.0, -103.0, -104.0, -105.0]


def test_resume_drops_epochs_it_repeats_and_widens_the_header(tmp_path: Path) -> None:
    # the previous attempt logged epoch 3 but stopped before checkpointing it: the resumed run
    # repeats epoch 3, which must replace the row rather than duplicate it
    log_epochs(tmp_path, range(1, 4))
    with open_loggers((), tmp_path, tiny_config(), resume=True) as run_loggers:
        for epoch in (3, 4):
            run_loggers.log(record(epoch, val_accuracy=0.5 + epoch / 10), epoch)

    lines, rows = read_csv(tmp_path)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert lines.count(lines[0]) == 1
    assert "val_accuracy" in lines[0]
    assert [r["val_accuracy"] for r in rows[:2]] == ["", ""]
    assert [float(r["val_accuracy"]) for r in rows[2:]] == [0.8, 0.9]


def test_a_new_run_replaces_an_old_attempts_csv(tmp_path: Path) -> None:
    log_epochs(tmp_path, range(1, 4))
    log_epochs(tmp_path, range(1, 2))  # no resume: a new run in the same directory
    _, rows = read_csv(tmp_path)
    assert [int(r["step"]) for r in rows] == [1]


def test_only_numbers_are_logged_and_non_finite_values_as_they_are(tmp_path: Path) -> None:
    with open_loggers((), tmp_path, tiny_config()) as run_loggers:
        run_loggers.log({"epoch": 1, "test_elbo": math.nan, "gap": math.inf, "name": "x"}, 1)
        run_loggers.log({"epoch": 2, "flag": True, "count": 7}, 2)
    _, rows = read_csv(tmp_path)
    assert set(rows[0]) == {"step", "test_elbo", "gap", "count"}
    assert math.isnan(float(rows[0]["test_elbo"])) and float(rows[0]["gap"]) == math.inf
    assert rows[1]["count"] == "7"


def test_close_finalizes_every_logger_with_the_status(tmp_path: Path) -> None:
    run_loggers = open_loggers((), tmp_path, tiny_config())
    seen = []
    run_loggers.loggers[0].finalize = seen.append  # type: ignore[method-assign]
    with pytest.raises(RuntimeError), run_loggers:
        raise RuntimeError("training stopped")
    assert seen == ["failed"]
    run_loggers.close()  # a second close does nothing
    assert seen == ["failed"]
    with pytest.raises(RuntimeError, match="closed"):
        run_loggers.log(record(1), 1)


def test_importing_does_not_import_lightning() -> None:
    code = (
        "import sys, pyro_vae, pyro_vae.loggers as L; L.check_loggers(('tensorboard',)); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'tensorboard'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- check_loggers


@pytest.mark.parametrize(
    "names, words",
    [
        (("nope",), ["--logger nope", "unknown logger", "mlflow, tensorboard, wandb"]),
        (("tensorboard", "tensorboard"), ["--logger tensorboard", "given twice"]),
        (("csv",), ["--logger csv", "always written"]),
    ],
)
def test_check_loggers_refuses(names: tuple[str, ...], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        check_loggers(names)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow")])
def test_check_loggers_names_the_pip_command_for_a_missing_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, package: str
) -> None:
    real = importlib.util.find_spec
    missing = {"tensorboard", "tensorboardX", "mlflow"}
    monkeypatch.setattr(
        loggers_module, "find_spec", lambda m, *a: None if m in missing else real(m, *a)
    )
    with pytest.raises(ConfigError) as info:
        check_loggers((name,))
    message = str(info.value)
    assert "\n" not in message
    assert f'pip install "pyro-vae[{name}]"' in message and package in message
    with pytest.raises(ConfigError, match="not installed"):
        open_loggers((name,), tmp_path / "run", tiny_config())
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_a_wandb_directory_is_not_the_wandb_package(monkeypatch: pytest.MonkeyPatch) -> None:
    # W&B leaves ./wandb/ behind; on sys.path it is found as a namespace package (origin None)
    namespace = importlib.machinery.ModuleSpec("wandb", None)
    monkeypatch.setattr(loggers_module, "find_spec", lambda m, *a: namespace)
    with pytest.raises(ConfigError, match=r'pip install "pyro-vae\[wandb\]"'):
        check_loggers(("wandb",))


def test_check_loggers_accepts_installed_ones() -> None:
    check_loggers(())
    installed = [n for n in LOGGERS.names() if loggers_module._installed(n)]
    check_loggers(tuple(installed))
    check_loggers("")  # a value typed on the command line is split like any list option


# -- the optional loggers (each skipped where its package is not installed)


def test_tensorboard_writes_events_that_read_back(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_epochs(tmp_path, range(1, 4), ("tensorboard",))
    log_epochs(tmp_path, range(3, 6), ("tensorboard",), resume=True)  # repeats epoch 3

    home = tmp_path / "logs" / "tensorboard"
    assert len(list(home.glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(home))
    events.Reload()
    assert {"train_elbo", "test_elbo", "epoch_time"} <= set(events.Tags()["scalars"])
    scalars = events.Scalars("train_elbo")
    assert [s.step for s in scalars] == [1, 2, 3, 4, 5]  # the first attempt's epoch 3 is purged
    assert [s.value for s in scalars] == pytest.approx([-101, -102, -103, -104, -105])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")

    log_epochs(tmp_path, range(1, 3), ("tensorboard",))  # a new run hides the old one's events
    events = EventAccumulator(str(home))
    events.Reload()
    assert [s.step for s in events.Scalars("train_elbo")] == [1, 2]


def test_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    run = tmp_path / "run"

    log_epochs(run, range(1, 3), ("wandb",))
    assert wandb.run is None  # finished by close, so a later run in this process is its own
    run_id = (run / "logs" / "wandb" / "run_id").read_text().strip()
    assert len(list((run / "logs" / "wandb").glob(f"wandb/offline-run-*-{run_id}/*.wandb"))) == 1

    log_epochs(run, range(3, 4), ("wandb",), resume=True)
    assert (run / "logs" / "wandb" / "run_id").read_text().strip() == run_id
    assert wandb.run is None


def test_mlflow_store_in_the_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    run = tmp_path / "run"
    log_epochs(run, range(1, 3), ("mlflow",))
    log_epochs(run, range(3, 4), ("mlflow",), resume=True)

    home = run / "logs" / "mlflow"
    client = MlflowClient(f"sqlite:///{home.resolve() / 'mlflow.db'}")
    run_id = (home / "run_id").read_text().strip()
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED"
    assert info.info.run_name == "run"
    assert info.data.params["train.lr"] == str(tiny_config().train.lr)
    history = client.get_metric_history(run_id, "train_elbo")
    assert [(m.step, m.value) for m in history] == [(1, -101.0), (2, -102.0), (3, -103.0)]
