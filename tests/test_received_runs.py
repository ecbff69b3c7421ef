"""A run directory from someone else is safe to open: no write goes through a link planted in it,
a damaged checkpoint, metrics file or log is one line naming what is wrong, a received
configuration is validated like a new one, and a full disk is one line that keeps the old files."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from pyro_vae import CheckpointError, load_run
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main

TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("received") / "run"
    assert main([*TRAIN, "--run-dir", str(run)]) == 0
    assert main(["score", str(run), "--nll-samples", "2", "--regret-steps", "0", "--limit", "8",
                 "--typicality-points", "0"]) == 0  # fmt: skip
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the trained run, one per test."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, symlinks=True)
    return copy


def _one_line(code: int, err: str) -> None:
    err = "".join(line for line in err.splitlines(True) if not line.startswith("pyro-vae: note:"))
    assert code in (0, 2), err
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("pyro-vae: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err


# -- links planted at every path the program writes ------------------------------------------------
RESUME = ["train", "--resume", "--epochs", "2", "--no-progress"]
FIGURE_COMMANDS = [
    ["sample", "-n", "4"],
    ["reconstruct", "-n", "4"],
    ["interpolate", "--pairs", "1", "--steps", "3"],
    ["traverse", "--steps", "3"],
    ["plot"],
]
SCORE = ["score", "--nll-samples", "2", "--regret-steps", "0", "--limit", "8"]
#: every path the program writes in a run directory, and the commands that write it
WRITTEN = {
    ".lock": [RESUME],
    "config.json": [RESUME],
    "metrics.jsonl": [RESUME],
    "checkpoint.pt": [RESUME, ["sample", "-n", "4"]],
    "logs": [RESUME],
    "logs/csv": [RESUME],
    "logs/csv/metrics.csv": [RESUME],
    "logs/csv/hparams.yaml": [RESUME],
    "figures": [RESUME, *FIGURE_COMMANDS],
    "figures/samples.png": [RESUME, FIGURE_COMMANDS[0], ["plot"]],
    "figures/reconstructions.png": [FIGURE_COMMANDS[1], ["plot"]],
    "figures/interpolation.png": [FIGURE_COMMANDS[2], ["plot"]],
    "figures/traversal.png": [FIGURE_COMMANDS[3], ["plot"]],
    "figures/training_curves.png": [["plot"]],
    "figures/latent_map.png": [["plot"]],
    "figures/kl_per_dimension.png": [["plot"]],
    "scores": [SCORE],
    "scores/digits-test.csv": [SCORE],
}


@pytest.mark.parametrize("rel", list(WRITTEN))
def test_no_write_goes_through_a_planted_link(rel, run, tmp_path, capsys) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim"
    target = run / rel
    if target.is_dir():  # a folder of the run replaced by a link to a folder elsewhere
        shutil.rmtree(target)
        victim.mkdir()
        (victim / "precious.txt").write_text("precious")
    else:
        if target.exists():
            target.unlink()
        victim.write_text("precious")
    target.symlink_to(victim)
    before = sorted((p.relative_to(outside), p.read_bytes() if p.is_file() else b"") for p in
                    outside.rglob("*"))  # fmt: skip
    for argv in WRITTEN[rel]:
        if argv[0] == "train":
            code = main([argv[0], "--run-dir", str(run), *argv[1:]])
        else:
            code = main([argv[0], str(run), *argv[1:]])
        _one_line(code, capsys.readouterr().err)
    after = sorted((p.relative_to(outside), p.read_bytes() if p.is_file() else b"") for p in
                   outside.rglob("*"))  # fmt: skip
    assert after == before, f"a write went through the link {rel}"


def test_a_link_in_the_run_is_refused_with_its_name(run, tmp_path, capsys) -> None:
    shutil.rmtree(run / "figures")
    (tmp_path / "elsewhere").mkdir()
    (run / "figures").symlink_to(tmp_path / "elsewhere")
    assert main(["sample", str(run), "-n", "4"]) == 2
    err = capsys.readouterr().err
    assert "figures is a symbolic link" in err and err.count("\n") == 1
    assert not any((tmp_path / "elsewhere").iterdir())


def test_a_fifo_as_checkpoint_or_metrics_is_refused(run, capsys) -> None:
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    code = main(["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "FIFO" in err, err
    (run / "checkpoint.pt").unlink()
    os.mkfifo(run / "checkpoint.pt")
    assert main(["sample", str(run)]) == 2
    assert "FIFO" in capsys.readouterr().err


# -- damaged checkpoints: every entry's presence and type ----------------------------------------------
def _rewrite(run: Path, change) -> None:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")


DAMAGE = {
    "plan a list": (lambda c: c.__setitem__("plan", [1, 2]), "'plan' is a list"),
    "plan a tensor": (lambda c: c.__setitem__("plan", torch.ones(2)), "'plan' is a Tensor"),
    "optim missing": (lambda c: c.pop("optim"), "'optim' is missing"),
    "optim a list": (lambda c: c.__setitem__("optim", [1]), "'optim' is a list"),
    "optim entry a list": (
        lambda c: c["optim"].__setitem__(next(iter(c["optim"])), [1]),
        "not an optimiser state",
    ),
    "rng missing": (lambda c: c.pop("rng"), "'rng' is missing"),
    "rng short": (
        lambda c: c["rng"].__setitem__("cpu", c["rng"]["cpu"][:10]),
        "'rng.cpu' is a torch.uint8 tensor of shape (10,)",
    ),
    "rng per rank wrong": (
        lambda c: c["rng"].__setitem__("ranks", [dict(c["rng"]), dict(c["rng"])]),
        "'rng.ranks' holds 2 random states for a run of 1 processes",
    ),
    "rng ranks junk": (lambda c: c["rng"].__setitem__("ranks", ["x"]), "'rng.ranks[0]'"),
    "feed wrong": (lambda c: c.__setitem__("feed", {"generator": torch.ones(3)}), "'feed.gen"),
    "feed a list": (lambda c: c.__setitem__("feed", [0]), "'feed' is a list"),
    "selected model a tensor": (
        lambda c: c["plan"].__setitem__("selected_model", torch.ones(3)),
        "'plan.selected_model' is a Tensor",
    ),
    "model missing": (lambda c: c.pop("model"), "'model' is missing"),
    "model holds a string": (
        lambda c: c["model"].__setitem__(next(iter(c["model"])), "w"),
        "not a tensor",
    ),
    "model empty": (lambda c: c.__setitem__("model", {}), "'model' is empty"),
    "epoch a string": (lambda c: c.__setitem__("epoch", "1"), "'epoch' is a str"),
    "epoch negative": (lambda c: c.__setitem__("epoch", -4), "'epoch' is -4"),
    "epoch beyond the run": (lambda c: c.__setitem__("epoch", 99), "'epoch' is 99"),
    "config a dict": (lambda c: c.__setitem__("config", {}), "'config' is a dict"),
    "fingerprint an int": (lambda c: c.__setitem__("data_fingerprint", 3), "'data_fingerprint'"),
    "adam moment of another shape": (
        lambda c: c["optim"][next(iter(c["optim"]))].__setitem__("exp_avg", torch.ones(7, 7)),
        "has shape (7, 7)",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_naming_the_entry(case, run, capsys) -> None:
    change, message = DAMAGE[case]
    _rewrite(run, change)
    for argv in (
        ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"],
        ["evaluate", str(run), "--nll-samples", "0", "--iwae-samples", "0", "--no-probe"],
        ["sample", str(run), "-n", "4"],
    ):
        code = main(argv)
        err = capsys.readouterr().err
        _one_line(code, err)
        if case == "adam moment of another shape" and argv[0] != "train":
            assert code == 0, err  # the optimiser state is read to resume only
            continue
        assert code == 2 and message in err, (argv, err)


def test_the_structure_error_reads_as_the_issue_asks(run) -> None:
    _rewrite(run, lambda c: c.pop("optim"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(run)
    assert str(e.value).startswith(
        "checkpoint.pt: 'optim' is missing: the file is damaged or not from pyro-vae"
    )


# -- a received configuration passes the checks of a new one -----------------------------------------
def _edit_config(run: Path, section: str, **values) -> None:
    def change(c) -> None:
        config = json.loads(c["config"])
        config[section].update(values)
        c["config"] = json.dumps(config)

    _rewrite(run, change)


@pytest.mark.parametrize(
    "section, values, message",
    [
        ("train", {"seed": -1}, "--seed must lie in"),
        ("model", {"hidden": [10**9]}, "--hidden 1000000000 is larger than pyro-vae allows"),
        ("train", {"epochs": -4}, "--epochs must be a positive integer"),
        ("model", {"guide": "no-such-guide"}, "unknown guide 'no-such-guide'"),
        ("data", {"binarize": "half"}, "unknown binarization"),
        ("data", {"workers": -3}, "--workers must be a whole number"),
    ],
)
def test_a_received_configuration_is_validated(run, section, values, message, capsys) -> None:
    _edit_config(run, section, **values)
    for argv in (["evaluate", str(run)], ["train", "--run-dir", str(run), "--resume"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        # refused as the checkpoint's configuration, before its data are looked for
        assert "its configuration is refused" in err, err
    with pytest.raises(CheckpointError, match="its configuration is refused"):
        load_run(run)  # (in Python words: seed=-1)


def test_a_received_data_dir_is_not_created_or_downloaded_into(run, tmp_path, capsys) -> None:
    def change(c) -> None:
        config = json.loads(c["config"])
        config["data"].update(dataset="mnist", data_dir=str(tmp_path / "not" / "here"))
        c["config"] = json.dumps(config)

    _rewrite(run, change)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "does not exist on this machine" in err, err
    assert not (tmp_path / "not").exists()


# -- metrics.jsonl and the CSV log on resume ---------------------------------------------------------
@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x80\x81\xff binary", "not a text file"),
        (b"[1, 2]\n", "line 1 is not a record of an epoch"),
        (b'{"epoch": 1}\n"text"\n', "line 2 is not a record"),
        (b'{"epoch": "one"}\n', "line 1 is not a record"),
        (b"{not json\n", "line 1 is not JSON"),
    ],
)
def test_a_damaged_metrics_file_is_one_line_on_resume_and_plot(run, content, message, capsys):
    (run / "metrics.jsonl").write_bytes(content)
    for argv in (
        ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"],
        ["plot", str(run)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x80\x81\xff\x00binary", "not a text file"),
        (b"epoch,a\n1,2\n", "not a header starting with 'step'"),
        (b"step,a\n1,2,3,4\n", "more cells than the header"),
    ],
)
def test_a_damaged_csv_log_is_one_line_on_resume(run, content, message, capsys) -> None:
    (run / "logs" / "csv" / "metrics.csv").write_bytes(content)
    argv = ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"]
    assert main([*argv, "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


# -- a full disk ---------------------------------------------------------------------------------------
def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_checkpoint(
    run, monkeypatch, capsys
) -> None:
    before = (run / "checkpoint.pt").read_bytes()
    monkeypatch.setattr("pyro_vae.safety.os.fsync", _disk_full)
    argv = ["train", "--run-dir", str(run), "--resume", "--epochs", "2", "--no-progress"]
    assert main([*argv, "--no-plots"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def test_a_full_disk_while_drawing_keeps_the_old_figure(run, monkeypatch, capsys) -> None:
    from matplotlib.figure import Figure

    path = run / "figures" / "samples.png"
    before = path.read_bytes()
    assert before  # a good figure was there

    def half_written(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"")  # what a full disk leaves: an empty file
        _disk_full()

    monkeypatch.setattr(Figure, "savefig", half_written)
    assert main(["sample", str(run), "-n", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err, err
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(".")) == []


# -- a model whose weights overflow ------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--nll-samples", "4"],
        ["sample", "-n", "4"],
        ["score", "--nll-samples", "2", "--regret-steps", "0", "--limit", "8"],
        ["encode", "--out", "{tmp}/z.npz"],
        ["plot"],
    ],
)
def test_huge_weights_are_one_line_not_nan_numbers_or_figures(argv, run, tmp_path, capsys) -> None:
    _rewrite(run, lambda c: c.__setitem__("model", {k: v * 1e30 for k, v in c["model"].items()}))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main([argv[0], str(run), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not finite" in err, err
