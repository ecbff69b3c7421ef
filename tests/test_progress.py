"""Progress fits where it goes: one line per epoch (and nothing else) on a pipe or a file, a bar
only on a terminal, silence with --quiet; long evaluations report the same way, on stderr."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from pyro_vae import progress
from pyro_vae.cli import main

from .conftest import REPO

EPOCH = re.compile(
    r"^epoch (\d+)/3  train ELBO -?\d+\.\d{3}  test ELBO -?\d+\.\d{3}  \d+\.\d\d s  \d+ images/s$"
)


def _pyro_vae(args, tmp_path, stdout):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )


def test_a_run_piped_to_a_file_writes_one_line_per_epoch(tmp_path):
    log = tmp_path / "log"
    args = ["train", "--epochs", "3", "--run-dir", "run", "--latent-dim", "2", "--hidden", "16"]
    with open(log, "w") as out:
        done = _pyro_vae([*args, "--no-plots"], tmp_path, out)
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    assert [int(EPOCH.match(line).group(1)) for line in lines[:3]] == [1, 2, 3], lines
    assert lines[3:] == ["run written to run (config.json, checkpoint.pt, metrics.jsonl)"]
    assert done.stderr == ""  # no bar where no terminal shows it


def test_quiet_is_silent_and_no_progress_gives_lines(tmp_path):
    args = ["train", "--epochs", "3", "--latent-dim", "2", "--hidden", "16", "--no-plots"]
    done = _pyro_vae([*args, "--run-dir", "a", "--quiet"], tmp_path, subprocess.PIPE)
    assert done.returncode == 0 and done.stderr == ""
    assert (
        done.stdout.splitlines()[0]
        == "run written to a (config.json, checkpoint.pt, metrics.jsonl)"
    )
    assert not any(EPOCH.match(line) for line in done.stdout.splitlines())


def test_the_bar_only_on_a_terminal(monkeypatch):
    class Tty:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(progress, "_in_notebook", lambda: False)
    for err, out, expected in [
        (True, True, (True, False)),  # a terminal: the bar
        (True, False, (True, True)),  # pyro-vae train > log in a terminal: bar, lines in the log
        (False, False, (False, True)),  # CI, SLURM: lines
        (False, True, (False, True)),
    ]:
        monkeypatch.setattr(sys, "stderr", Tty(err))
        monkeypatch.setattr(sys, "stdout", Tty(out))
        assert progress.outputs("auto") == expected
        assert progress.outputs(False) == (False, False)
        assert progress.outputs("lines") == (False, True)


def test_a_long_evaluation_reports_lines_on_stderr(capsys, monkeypatch):
    monkeypatch.setattr(progress, "_MIN_INTERVAL", 0.0)
    with progress.reporting("lines"):
        items = list(progress.track(range(20), total=20, desc="log p(x)"))
    assert items == list(range(20))
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 10 and lines[0].startswith("log p(x): 2/20 batches")
    assert lines[-1].startswith("log p(x): done, 20/20 batches")
    with progress.reporting(False):
        list(progress.track(range(20), total=20, desc="quiet"))
    assert capsys.readouterr().err == ""


@pytest.fixture
def run(tmp_path, capsys, monkeypatch):
    """A small trained run, with every progress line shown (no interval, no notebook)."""
    monkeypatch.setattr(progress, "_MIN_INTERVAL", 0.0)
    monkeypatch.setattr(progress, "_in_notebook", lambda: False)
    run = tmp_path / "run"
    argv = ["train", "--run-dir", str(run), "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]
    assert main([*argv, "--no-plots", "--quiet"]) == 0
    capsys.readouterr()
    return run


def test_evaluate_shows_progress_on_stderr_and_keeps_stdout_for_results(run, capsys):
    assert main(["evaluate", str(run), "--nll-samples", "3", "--iwae-samples", "0", "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("{") and captured.out.count("\n") == 1
    assert "log p(x), 3 samples: done" in captured.err
    assert main(["evaluate", str(run), "--nll-samples", "3", "--json", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_a_bad_progress_mode_is_refused():
    with pytest.raises(Exception, match="progress must be"):
        progress.check_mode("loud")


def test_bad_score_data_is_refused_before_any_scoring(run, tmp_path, capsys):
    assert (
        main(["score", str(run), "--data", str(tmp_path / "none.npz"), "--nll-samples", "3"]) == 2
    )
    err = capsys.readouterr().err
    assert "none.npz" in err and "log p(x)" not in err, err  # no reference scored first
