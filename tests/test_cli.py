"""Every sub-command end to end on the bundled digits, and the errors bad input gets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pyro_vae.cli import main

TINY = [
    "--epochs",
    "2",
    "--hidden",
    "32",
    "--latent-dim",
    "2",
    "--batch-size",
    "256",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--run-dir", str(run_dir), *TINY]) == 0
    return str(run_dir)


def test_train_writes_a_run_directory(run) -> None:
    from pathlib import Path

    r = Path(run)
    config = json.loads((r / "config.json").read_text())
    assert config["model"]["latent_dim"] == 2 and config["train"]["epochs"] == 2
    metrics = [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert {"train_elbo", "test_elbo", "epoch_time"} <= set(metrics[0])
    figures = {p.name for p in (r / "figures").iterdir()}
    assert {
        "training_curves.png",
        "reconstructions.png",
        "samples.png",
        "interpolation.png",
        "latent_map.png",
    } <= figures
    assert all((r / "figures" / f).stat().st_size > 1000 for f in figures)


def test_evaluate_json(run, capsys) -> None:
    assert main(["evaluate", run, "--json", "--nll-samples", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["test_points"] == 359 and out["test_elbo"] < 0


@pytest.mark.parametrize("command", ["sample", "reconstruct", "interpolate"])
def test_figure_commands(run, command, tmp_path, capsys) -> None:
    out = tmp_path / f"{command}.png"
    assert main([command, run, "--out", str(out)]) == 0
    assert out.stat().st_size > 1000 and str(out) in capsys.readouterr().out


def test_plot_redraws_every_figure(run, capsys) -> None:
    assert main(["plot", run, "--projection", "tsne"]) == 0
    assert "latent_map.png" in capsys.readouterr().out


def test_resume_continues_and_refuses_changes(run, capsys) -> None:
    assert (
        main(
            ["train", "--run-dir", run, "--resume", "--epochs", "3", "--no-progress", "--no-plots"]
        )
        == 0
    )
    assert "epoch 3" in capsys.readouterr().out
    assert main(["train", "--run-dir", run, "--resume", "--latent-dim", "5", "--no-progress"]) == 2
    assert "model.latent_dim: 2 -> 5" in capsys.readouterr().err


def _error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("pyro-vae: error: ")
        and "Traceback" not in err
        and len(err.strip().splitlines()) == 1
    )
    return err


def test_bad_input_gets_one_line(tmp_path, capsys) -> None:
    base = ["train", "--no-progress", "--no-plots"]
    assert "unknown data set 'nope'" in _error([*base, "--dataset", "nope"], capsys)
    assert "--latent-dim must be a positive integer" in _error([*base, "--latent-dim", "0"], capsys)
    assert "--batch-size must be a positive integer" in _error(
        [*base, "--batch-size", "-3"], capsys
    )
    assert "unknown guide 'nope'" in _error([*base, "--guide", "nope"], capsys)
    np.save(tmp_path / "big.npy", np.full((20, 4), 7.0, dtype=np.float32))
    assert "needs data in [0, 1]" in _error(
        [*base, "--dataset", str(tmp_path / "big.npy"), "--run-dir", str(tmp_path / "r1")], capsys
    )
    nan = np.zeros((20, 4), dtype=np.float32)
    nan[0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert "NaN" in _error([*base, "--dataset", str(tmp_path / "nan.npy")], capsys)
    assert "no checkpoint" in _error(["evaluate", str(tmp_path)], capsys)
    assert "no run directory" in _error(["evaluate", str(tmp_path / "nowhere")], capsys)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "checkpoint.pt").write_bytes(b"garbage")
    assert "corrupt" in _error(["sample", str(tmp_path / "bad")], capsys)
    assert "--resume needs --run-dir" in _error([*base, "--resume"], capsys)


def test_unknown_option_is_a_one_line_error(capsys) -> None:
    assert main(["train", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --no-such-option" in err
    assert "--help)" in err


def test_python_dash_m_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyro_vae", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--dataset",
        "--binarize",
        "--guide",
        "--prior",
        "--objective",
        "--resume",
        "--device",
        "--seed",
    ):
        assert flag in out


def test_train_help_reads_like_a_well_kept_cli(capsys) -> None:
    from pyro_vae.cli import options

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    # real metavars, not argparse's DEST-derived ones
    assert "DATA.DATASET" not in text and "MODEL." not in text and "TRAIN." not in text
    assert "--latent-dim D" in text and "--guide-opt KEY=VALUE" in text
    # every option with a default shows it
    flat = " ".join(text[text.index("data options") :].split())  # after the usage lines
    for flag, default in [
        ("--latent-dim", "20"),
        ("--epochs", "30"),
        ("--lr", "0.001"),
        ("--hidden", "400"),
        ("--guide", "diagonal"),
        ("--objective", "elbo"),
        ("--beta", "1.0"),
        ("--labelled-every", "1"),
    ]:
        start = flat.index(f"{flag} ")
        assert f"(default: {default})" in flat[start : start + 400], flag
    # registered names are listed
    assert "one of: diagonal, iaf, lowrank, planar" in flat
    assert len(options()) >= 30
