"""Checkpoints are atomic, load without running code, and fail with messages."""

from __future__ import annotations

import pytest
import torch

from pyro_vae import CheckpointError, PyroVAEError, RunConfig, load_run
from pyro_vae.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, RunConfig(), epoch=1, model={"w": torch.ones(2)})
    before = path.read_bytes()

    def crash(f) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(PyroVAEError, match="disk full"):
        atomic_write_bytes(path, crash)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_round_trip_with_weights_only(tmp_path) -> None:
    state = {"optim": {}, "rng": {"cpu": torch.get_rng_state()}, "plan": {}}
    save_checkpoint(
        tmp_path / "c.pt", RunConfig(), epoch=3, model={"w": torch.arange(3.0)}, **state
    )
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["epoch"] == 3 and ckpt["config"] == RunConfig()
    assert torch.equal(ckpt["model"]["w"], torch.arange(3.0))


def test_missing_corrupt_and_foreign_checkpoints(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"some": "dict"}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pyro-vae checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_pickled_code_is_never_run(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    torch.save({"format": "pyro-vae-checkpoint", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "evil.pt")


def test_incompatible_checkpoint(tmp_path) -> None:
    from pyro_vae import train

    from .conftest import tiny_config

    train(tiny_config(), tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    ckpt["model"] = {k: v[..., :1] for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_run(tmp_path / "run")
