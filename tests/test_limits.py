"""What was silently accepted is refused in one line: out-of-range rows anywhere in a .npy, image
folders with symbolic link loops, a FIFO named as data, --fast reduce-overhead on the CPU, score
--data-dir; sizes that become allocations are checked first and the message gives the size; the
DataLoader workers of a streamed run end with it however it stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pyro_vae import DataConfig, DataError, load_dataset
from pyro_vae.cli import main

TRAIN = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]
TRAIN += ["--no-plots"]


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyro-vae: error: "), err
    return err


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_out_of_range_pixels_beyond_the_first_rows_are_refused_alike(suffix, tmp_path, capsys):
    x = np.random.default_rng(0).random((6000, 4), dtype=np.float32)
    x[5500, 1] = 3.0  # far beyond the 4,096 rows once checked
    path = tmp_path / f"x{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savez(path, x=x)
    assert main([*TRAIN, "--dataset", str(path), "--run-dir", str(tmp_path / "r")]) == 2
    assert "needs data in [0, 1]" in _err(capsys)


def test_an_image_folder_with_a_symlink_loop_is_refused(tmp_path) -> None:
    for name in ("cat", "dog"):
        (tmp_path / "pics" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(
                tmp_path / "pics" / name / f"{i}.png"
            )
    (tmp_path / "pics" / "cat" / "loop").symlink_to(tmp_path / "pics")
    with pytest.raises(DataError, match="symbolic link loop or an alias") as e:
        load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    assert "\n" not in str(e.value)
    (tmp_path / "pics" / "cat" / "loop").unlink()
    (tmp_path / "pics" / "alias").symlink_to(tmp_path / "pics" / "dog")  # an alias as a class
    with pytest.raises(DataError, match="alias"):
        load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    (tmp_path / "pics" / "alias").unlink()
    ds = load_dataset(DataConfig(f"folder:{tmp_path / 'pics'}", workers=0))
    assert len(ds.train) + len(ds.test) == 6 and ds.num_classes == 2


@pytest.mark.parametrize("kind", ["data", "image"])
def test_a_fifo_as_data_is_refused_not_waited_on(kind, tmp_path, capsys) -> None:
    if kind == "data":
        os.mkfifo(tmp_path / "x.npy")
        dataset = str(tmp_path / "x.npy")
    else:
        (tmp_path / "pics").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "pics" / "a.png")
        os.mkfifo(tmp_path / "pics" / "b.png")
        dataset = f"folder:{tmp_path / 'pics'}"

    class Blocked(BaseException):  # not an OSError nor an Exception: main() cannot catch it
        pass

    def blocked(signum, frame):
        raise Blocked("blocked on the FIFO")

    # a FIFO that is opened blocks for ever: an alarm turns that into a failure
    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(20)
    try:
        code = main([*TRAIN, "--dataset", dataset, "--run-dir", str(tmp_path / "r")])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2
    err = _err(capsys)
    assert "FIFO" in err or "not a regular file" in err, err


def test_fast_reduce_overhead_on_the_cpu_is_refused(tmp_path, capsys) -> None:
    argv = [*TRAIN, "--fast", "reduce-overhead", "--device", "cpu"]
    assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 2
    assert "--fast reduce-overhead uses CUDA graphs" in _err(capsys)


def test_score_data_dir_is_used_or_refused(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    # the run's data set (digits) reads no data folder: --data-dir is refused, not ignored
    argv = ["score", str(run), "--data-dir", str(tmp_path), "--nll-samples", "2"]
    assert main(argv) == 2
    assert "--data-dir is not used by the run's data set digits" in _err(capsys)
    np.savez(tmp_path / "other.npz", x=np.random.default_rng(0).random((20, 8, 8)))
    argv = ["score", str(run), "--data", str(tmp_path / "other.npz"), "--data-dir", str(tmp_path)]
    assert main([*argv, "--nll-samples", "2"]) == 2
    assert "--data-dir is not used by" in _err(capsys)


# -- sizes checked before they are allocated ----------------------------------------------------------
def test_a_huge_hidden_size_from_a_config_file_gives_its_size(tmp_path, capsys) -> None:
    (tmp_path / "c.json").write_text('{"model": {"hidden": [60000, 60000, 60000]}}')
    argv = ["train", "--config", str(tmp_path / "c.json"), "--run-dir", str(tmp_path / "r")]
    assert main([*argv, "--no-progress"]) == 2
    err = _err(capsys)
    assert "parameters: --hidden 60000 60000 60000" in err and "GiB" in err, err


def test_a_huge_image_size_is_refused_with_its_size(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("PYRO_VAE_MEMORY_LIMIT", str(1 << 30))
    (tmp_path / "pics").mkdir()
    for i in range(5):
        Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "pics" / f"{i}.png")
    argv = [*TRAIN, "--dataset", f"folder:{tmp_path / 'pics'}", "--image-size", "30000"]
    start = time.perf_counter()
    assert main([*argv, "--run-dir", str(tmp_path / "r")]) == 2
    err = _err(capsys)
    assert "(1, 30000, 30000)" in err and "GiB" in err, err
    assert time.perf_counter() - start < 30  # refused before decoding a single image


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "-n", str(10**9)], "a figure of 1,000,000,000 images"),
        (["interpolate", "--steps", str(10**8)], "images is more than pyro-vae draws"),
        (["traverse", "--steps", str(10**8)], "images is more than pyro-vae draws"),
    ],
)
def test_figure_sizes_are_checked_before_drawing(argv, message, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main([argv[0], str(run), *argv[1:]]) == 2
    assert message in _err(capsys)


# -- streamed loaders' workers end with their parent ------------------------------------------------
def _children(pid: int) -> set[int]:
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out |= {int(c) for c in text}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_stream_workers_end_with_their_parent(stop, tmp_path) -> None:
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((4000, 16), dtype=np.float32))
    argv = [sys.executable, "-m", "pyro_vae", *TRAIN, "--epochs", "1000", "--batch-size", "8"]
    argv += ["--dataset", str(tmp_path / "x.npy"), "--loading", "stream", "--workers", "3"]
    argv += ["--run-dir", str(tmp_path / "r")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    err = tmp_path / "stderr.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen(argv, env=env, stderr=f, stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        workers: set[int] = set()
        while time.time() < deadline and len(workers) < 3:
            time.sleep(0.5)
            assert proc.poll() is None, "training ended before its workers started"
            workers = _children(proc.pid)
        assert len(workers) >= 3, workers
        os.kill(proc.pid, stop)
        proc.wait(60)
        # at once: PyTorch's own watchdog would notice the parent gone only after seconds, and
        # not at all while a worker blocks in a read
        deadline = time.time() + 2
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "a worker outlived its parent"
        if stop != signal.SIGKILL:  # a clean stop says so in one line, and nothing else
            lines = [
                line
                for line in err.read_text().splitlines()
                if "Warning" not in line and "check_worker_number" not in line
            ]
            assert lines == [
                f"pyro-vae: terminated; continue with: pyro-vae train --run-dir {tmp_path / 'r'} "
                "--resume"
            ], lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
