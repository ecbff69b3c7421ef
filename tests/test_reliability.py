"""Reliability: bad input ends in one line, a run directory has one owner, nothing non-finite is saved
or resumed, and a killed run leaves nothing behind that a resume does not clean."""

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

from pyro_vae import CheckpointError, ConfigError, TrainingDiverged, load_run, train
from pyro_vae.checkpoint import CHECKPOINT, load_checkpoint, run_directory
from pyro_vae.cli import main
from pyro_vae.train import json_line

from .conftest import tiny_config

FAST = ["--epochs", "1", "--latent-dim", "2", "--hidden", "8", "--no-progress", "--no-plots"]


def one_line_error(capsys, code: int = 2) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: "), err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rel") / "run"
    assert main(["train", "--run-dir", str(path), *FAST]) == 0
    return path


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--seed", "-1"], "--seed must lie in 0.."),
        (["train", "--seed", str(2**64 + 1)], "--seed must lie in 0.."),
        (["train", "--device", "mps"], "trains on cpu or cuda"),
        (["train", "--device", "meta"], "trains on cpu or cuda"),
        (["train", "--device", "gpu9"], "unknown device"),
        (["train", "--epochs", "two"], "must be an integer, got 'two'"),
        (["train", "--hidden", "400.5"], "must be an integer"),
        (["train", "--lr", "fast"], "must be a finite number"),
        (["train", "--lr", "nan"], "must be a finite number"),
        (["train", "--labels", "20", "--model", "cvae"], "--labels is not used by --model cvae"),
        (["train", "--guide-opt", "rank"], "expected KEY=VALUE"),
    ],
)
def test_bad_options_are_one_line(argv, message, capsys, tmp_path) -> None:
    code = main([*argv, "--run-dir", str(tmp_path / "r"), "--no-progress", "--no-plots"])
    err = one_line_error(capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "a configuration is a JSON object"),
        ('{"train": {"lr": "abc"}}', "train.lr (--lr) must be a finite number"),
        ('{"model": {"hidden": [400.5]}}', "model.hidden (--hidden) must be"),
        ('{"train": 3}', "config section 'train' must be an object"),
        ('{"extra": {}}', "unknown config section(s) extra"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_config_files_are_one_line(text, message, capsys, tmp_path) -> None:
    (tmp_path / "c.json").write_text(text)
    assert main(["train", "--config", str(tmp_path / "c.json"), *FAST]) == 2
    assert message in one_line_error(capsys)


def test_run_dir_that_is_a_file_is_refused_before_any_work(capsys, tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    assert main(["train", "--run-dir", str(tmp_path / "file"), *FAST]) == 2
    assert "is a file, not a directory" in one_line_error(capsys)


def test_a_second_writer_is_refused_with_the_owners_pid(capsys, tmp_path) -> None:
    with run_directory(tmp_path / "run"):
        assert main(["train", "--run-dir", str(tmp_path / "run"), *FAST]) == 2
        err = one_line_error(capsys)
        assert f"in use by another pyro-vae process (pid {os.getpid()})" in err
    assert main(["train", "--run-dir", str(tmp_path / "run"), *FAST]) == 0  # released


def test_a_second_writer_in_another_process_is_refused(tmp_path) -> None:
    argv = [sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(tmp_path / "run")]
    argv += ["--epochs", "200", "--latent-dim", "2", "--hidden", "8", "--no-progress"]
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "run" / CHECKPOINT).exists() and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2
        assert f"in use by another pyro-vae process (pid {first.pid})" in second.stderr
        first.send_signal(signal.SIGTERM)  # a clean stop, with a message like Ctrl-C's
        _, err = first.communicate(timeout=60)
        assert first.returncode == 143 and b"pyro-vae: terminated; continue with" in err
        load_checkpoint(tmp_path / "run")  # the last checkpoint is whole
    finally:
        first.kill()


def test_kill_9_then_resume_leaves_no_orphan(tmp_path) -> None:
    argv = [sys.executable, "-m", "pyro_vae", "train", "--run-dir", str(tmp_path / "run")]
    argv += ["--epochs", "400", "--latent-dim", "2", "--hidden", "8", "--no-progress"]
    victim = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not (tmp_path / "run" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    victim.kill()
    victim.wait()
    # what a writer killed mid-write leaves behind
    (tmp_path / "run" / f".{CHECKPOINT}.abc123.tmp").write_bytes(b"half a checkpoint")
    done = load_checkpoint(tmp_path / "run")["epoch"]
    assert main([*argv[3:6], "--resume", "--epochs", str(done + 1), "--no-plots"]) == 0
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert load_checkpoint(tmp_path / "run")["epoch"] == done + 1


def test_divergence_never_exits_0_nor_saves_non_finite_state(tmp_path, capsys) -> None:
    code = main(["train", "--run-dir", str(tmp_path / "run"), *FAST[2:], "--lr", "1e7"])
    code = code or main(
        ["train", "--run-dir", str(tmp_path / "run"), "--resume", "--epochs", "8", "--no-plots"]
    )
    err = one_line_error(capsys)
    assert code == 2 and ("diverged" in err or "the loss became" in err), err
    if (tmp_path / "run" / CHECKPOINT).exists():
        ckpt = load_checkpoint(tmp_path / "run")  # refuses a non-finite one
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_the_parameters_are_checked_after_every_epoch(tmp_path) -> None:
    """A parameter gone NaN with every loss finite still stops training before the checkpoint."""
    from pyro_vae import VAE
    from pyro_vae.plan import UnsupervisedPlan

    class PoisonAfterEpoch2(UnsupervisedPlan):
        def end_epoch(self, data):
            self.epochs = getattr(self, "epochs", 0) + 1
            if self.epochs == 2:
                with torch.no_grad():
                    next(self.model_ref.parameters()).view(-1)[0] = float("nan")
            return {}

    class Poisoned(VAE):
        def training_plan(self, data, config, optim, objective):
            plan = PoisonAfterEpoch2(self, data, config, optim, objective)
            plan.model_ref = self
            return plan

    model = Poisoned((1, 8, 8), latent_dim=2, hidden=(32,))
    with pytest.raises(TrainingDiverged, match=r"in epoch 2: model\.\S+ is not finite.*epoch 1"):
        train(tiny_config(epochs=3), tmp_path / "run", progress=False, model=model)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1


def test_a_nan_planted_in_a_checkpoint_is_refused(tmp_path, run) -> None:
    raw = torch.load(run / CHECKPOINT, weights_only=True)
    key = next(iter(raw["model"]))
    raw["model"][key] = raw["model"][key].clone()
    raw["model"][key].view(-1)[0] = float("nan")
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(raw, bad / CHECKPOINT)
    with pytest.raises(CheckpointError, match=rf"non-finite value \(model.{key}\)"):
        load_run(bad)
    with pytest.raises(CheckpointError, match="non-finite"):
        train(tiny_config(epochs=2), bad, resume=True, progress=False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda c: c.pop("model"), "'model' is missing"),
        (lambda c: c.__setitem__("config", 7), "'config' is an int, not a str"),
        (lambda c: c.__setitem__("config", '{"train": []}'), "cannot read"),
        (lambda c: c.__setitem__("epoch", "2"), "'epoch' is a str"),
    ],
)
def test_a_damaged_checkpoint_is_one_line(damage, message, tmp_path, run, capsys) -> None:
    raw = torch.load(run / CHECKPOINT, weights_only=True)
    damage(raw)
    (tmp_path / "d").mkdir()
    torch.save(raw, tmp_path / "d" / CHECKPOINT)
    assert main(["evaluate", str(tmp_path / "d"), "--nll-samples", "0"]) == 2
    assert message in one_line_error(capsys)


def test_resume_cannot_go_back_nor_take_another_config(tmp_path, run, capsys) -> None:
    assert main(["train", "--run-dir", str(run), "--resume", "--epochs", "0"]) == 2
    assert "--epochs must be a positive integer" in one_line_error(capsys)
    train(tiny_config(epochs=2), tmp_path / "two", progress=False)
    with pytest.raises(ConfigError, match="has trained 2 epochs; epochs=1 would go back"):
        train(tiny_config(epochs=1), tmp_path / "two", resume=True, progress=False)
    (tmp_path / "c.json").write_text("{}")
    argv = ["train", "--run-dir", str(run), "--resume", "--config", str(tmp_path / "c.json")]
    assert main(argv) == 2
    assert "drop --config" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "{run}", "--limit", "0"], "--limit must be a positive integer"),
        (["evaluate", "{run}", "--limit", "-5"], "--limit must be a positive integer"),
        (["evaluate", "{run}", "--nll-samples", "-1"], "--nll-samples must be 0 (skip)"),
        (["sample", "{run}", "--out", "{tmp}/x.txt"], "a figure is written as .png"),
        (["sample", "{run}", "--out", "{tmp}"], "is a directory; give a file name"),
        (["sample", "{run}", "--out", "{tmp}/no/such/x.png"], "does not exist"),
        (["evaluate", "{tmp}/nothing"], "no run directory"),
    ],
)
def test_bad_run_command_arguments_are_one_line(argv, message, run, tmp_path, capsys) -> None:
    argv = [a.format(run=run, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    assert message in one_line_error(capsys)


def test_an_unexpected_error_is_one_line_and_debug_shows_it(monkeypatch, run, capsys) -> None:
    import pyro_vae.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("something deep inside\nwith a second line")

    monkeypatch.setattr(pyro_vae.evaluate, "report", broken)
    assert main(["evaluate", str(run)]) == 1
    err = one_line_error(capsys, 1)
    assert "internal error: RuntimeError: something deep inside. This is a bug" in err
    with pytest.raises(RuntimeError):
        main(["evaluate", str(run), "--debug"])


def test_metrics_lines_are_valid_json_with_non_finite_numbers_named() -> None:
    line = json_line({"epoch": 1, "test_elbo": float("-inf"), "train_elbo": -3.0})
    assert json.loads(line) == {
        "epoch": 1,
        "test_elbo": None,
        "train_elbo": -3.0,
        "non_finite": ["test_elbo"],
    }
