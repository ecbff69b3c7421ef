"""Honest semi-supervised runs, for every registered model that takes labels: a data set's own split
(-1 marks an unlabelled row), labels counted, and no label outside the budget read by any code path."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae import MODELS, DataConfig, ModelConfig, RunConfig, TrainConfig, load_dataset, train
from pyro_vae.build import validate
from pyro_vae.checkpoint import CHECKPOINT
from pyro_vae.cli import main
from pyro_vae.data import UNLABELLED, Dataset
from pyro_vae.describe import describe
from pyro_vae.errors import CheckpointError, ConfigError, DataError
from pyro_vae.models import m2 as m2_module
from pyro_vae.optim import adam
from pyro_vae.semi_supervised import semi_supervised_model

SEMI = [n for n in MODELS.names() if semi_supervised_model(n)]


def small(model: str, epochs: int = 2, **model_options) -> RunConfig:
    extra = {"m1_epochs": 1} if model == "m1m2" else {}
    return RunConfig(
        data=DataConfig("digits"),
        model=ModelConfig(
            model, latent_dim=4, hidden=(32,), model_options={**extra, **model_options}
        ),
        train=TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=0, device="cpu"),
    )


def digits_with_own_split(n_labelled: int = 40) -> tuple[Dataset, torch.Tensor]:
    data = load_dataset(DataConfig("digits"))
    mask = torch.zeros(data.train.shape[0], dtype=torch.bool)
    mask[torch.randperm(mask.numel(), generator=torch.Generator().manual_seed(5))[:n_labelled]] = 1
    return data.with_labelled(mask), mask


def test_semi_supervised_models_are_registered() -> None:
    assert {"m2", "m1m2"} <= set(SEMI)


LABEL_OPTIONS = ("labels", "val_labels", "patience", "val_size", "aux_weight", "labelled_every")


@pytest.mark.parametrize("model", ["adgm", "sdgm", "m1m2"])
def test_m2s_kin_take_its_label_options_typed_and_forwarded(model: str) -> None:
    # written once, in M2's signature: the others list them in theirs (takes_options_of)
    own, m2 = MODELS.parameters(model), MODELS.parameters("m2")
    for key in LABEL_OPTIONS:
        assert (own[key].kind, own[key].default, own[key].annotation) == (
            m2[key].kind,
            m2[key].default,
            m2[key].annotation,
        )
    assert list(own)[-len(LABEL_OPTIONS) :] == list(LABEL_OPTIONS)  # after the model's own
    typed = MODELS.options(model, {"labels": "30", "aux_weight": "2.5", "val_size": "none"})
    assert typed == {"labels": 30, "aux_weight": 2.5, "val_size": None}
    cfg = small(model, labels=30, patience=3, labelled_every=2)
    built = MODELS.get(model).from_config(cfg.model, (1, 8, 8), 10)
    assert (built.num_labelled, built.patience, built.labelled_every) == (30, 3, 2)
    assert {k: describe(built)["args"][k] for k in ("labels", "patience", "aux_weight")} == {
        "labels": 30,
        "patience": 3,
        "aux_weight": None,
    }
    with pytest.raises(ConfigError, match="--labels must be a whole number"):
        MODELS.get(model)((1, 8, 8), 10, labels=-1)


@pytest.mark.parametrize("model", SEMI)
def test_minus_one_rows_are_unlabelled_and_the_labelled_rows_are_the_labels(model: str) -> None:
    data, mask = digits_with_own_split(40)
    assert data.num_labelled == 40 and int((data.train_labels == UNLABELLED).sum()) == 1398
    cfg = validate(small(model), check_data=False)
    built = MODELS.get(model).from_config(cfg.model, data.x_shape, data.num_classes)
    plan = built.training_plan(data, cfg, adam(1e-3), None)
    assert set(plan.labelled.tolist()) == set(mask.nonzero().squeeze(-1).tolist())
    assert set(plan.unlabelled.tolist()) == set((~mask).nonzero().squeeze(-1).tolist())
    assert plan.counts["labels_used"] == 40
    # --labels would draw a subset of a fully labelled set; here it is refused
    with pytest.raises(Exception, match="its 40 labelled rows are the labels; drop --labels"):
        built20 = MODELS.get(model).from_config(
            validate(small(model, labels=20)).model, data.x_shape, data.num_classes
        )
        built20.training_plan(data, validate(small(model, labels=20)), adam(1e-3), None)


def test_a_file_with_minus_one_labels_trains_m2_on_its_labelled_rows(
    tmp_path: Path, capsys
) -> None:
    data, mask = digits_with_own_split(40)
    y = data.train_labels.numpy()
    path = tmp_path / "own.npz"
    np.savez(
        path,
        x_train=data.train.numpy(),
        y_train=y,
        x_test=data.test.numpy(),
        y_test=data.test_labels.numpy(),
    )
    loaded = load_dataset(DataConfig(str(path)))
    assert torch.equal(loaded.train_labels, data.train_labels) and loaded.num_classes == 10
    run = tmp_path / "run"
    argv = ["train", "--dataset", str(path), "--model", "m2", "--epochs", "1", "--hidden", "32"]
    assert main([*argv, "--run-dir", str(run), "--no-progress", "--no-plots"]) == 0
    assert "labels used 40" in capsys.readouterr().out
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["labels_used"] == 40 and "best_epoch" not in record
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    assert ckpt["plan"]["train_labels"] == 40 and "selected_model" not in ckpt["plan"]
    assert main(["evaluate", str(run), "--json", "--nll-samples", "0", "--iwae-samples", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels_used"] == 40 and out["selected_by"] == "last epoch" and "note" not in out
    # --labels is refused on such a file: its labelled rows are the labels
    assert main([*argv, "--labels", "20", "--run-dir", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "drop --labels" in capsys.readouterr().err


def test_cvae_refuses_unlabelled_rows() -> None:
    data, _ = digits_with_own_split(40)
    with pytest.raises(DataError, match="1398 of the 1438 training rows are unlabelled"):
        train(small("cvae", epochs=1), dataset=data, progress=False)


def test_test_labels_and_other_negative_labels_are_refused_with_a_hint() -> None:
    data = load_dataset(DataConfig("digits"))
    bad = data.test_labels.clone()
    bad[0] = -1
    with pytest.raises(DataError, match="only training rows may be unlabelled"):
        replace(data, test_labels=bad).check()
    worse = data.train_labels.clone()
    worse[0] = -3
    with pytest.raises(DataError, match=r"-1 marks an unlabelled training row.*y != -1"):
        replace(data, train_labels=worse).check()


def poisoned_run(model: str, monkeypatch, poison: bool, **train_kw) -> tuple[list, dict]:
    """Train on digits; once the budget is drawn, every training label outside it (and every test
    label, which must not steer training either) is replaced by another class when ``poison``."""
    data = load_dataset(DataConfig("digits"))
    data = replace(
        data, train_labels=data.train_labels.clone(), test_labels=data.test_labels.clone()
    )
    real = m2_module.split_labels

    def split_then_poison(labels, *args, **kw):
        split = real(labels, *args, **kw)
        if poison:
            outside = torch.ones(labels.shape[0], dtype=torch.bool)
            outside[split.budget] = False
            labels[outside] = (labels[outside] + 1) % data.num_classes  # in place: the run's own
            data.test_labels[:] = (data.test_labels + 3) % data.num_classes
        return split

    monkeypatch.setattr(m2_module, "split_labels", split_then_poison)
    r = train(small(model, labels=30, **train_kw), dataset=data, progress=False)
    history = [
        {k: v for k, v in h.items() if k not in ("epoch_time", "test_accuracy")} for h in r.history
    ]
    return history, {k: v.clone() for k, v in r.model.state_dict().items()}


def same(a: tuple[list, dict], b: tuple[list, dict]) -> bool:
    return a[0] == b[0] and all(torch.equal(v, b[1][k]) for k, v in a[1].items())


@pytest.mark.parametrize("model", SEMI)
def test_no_code_path_reads_a_label_outside_the_budget(model: str, monkeypatch) -> None:
    # --val-labels takes its labels from the budget: allowed, and the run is unchanged by poison
    clean = poisoned_run(model, monkeypatch, poison=False, val_labels=10)
    assert same(clean, poisoned_run(model, monkeypatch, poison=True, val_labels=10))
    assert clean[0][-1]["labels_used"] == 30 and "val_accuracy" in clean[0][-1]


def test_the_label_guard_catches_validation_beyond_the_budget(monkeypatch) -> None:
    """The check above can fail: --val-size reads labels beyond the budget (counted), and then the
    poisoned labels change what the run selects and reports."""
    clean = poisoned_run("m2", monkeypatch, poison=False, val_size=200)
    assert clean[0][-1]["labels_used"] == 230
    assert not same(clean, poisoned_run("m2", monkeypatch, poison=True, val_size=200))


def test_an_old_run_selected_with_extra_labels_says_so(tmp_path: Path, capsys) -> None:
    run = tmp_path / "old"
    # an earlier pyro-vae's defaults: validation beyond the budget (10%, at most 5000), uncounted
    train(small("m2", epochs=1, labels=30, val_size=None), run, progress=False)
    ckpt = torch.load(run / CHECKPOINT, weights_only=True)
    for key in m2_module.LABEL_COUNTS:
        del ckpt["plan"][key]
    torch.save(ckpt, run / CHECKPOINT)
    assert main(["evaluate", str(run), "--json", "--nll-samples", "0", "--iwae-samples", "0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels_used"] == 30 + 143 and out["extra_val_labels"] == 143
    assert "selected with 143 validation labels beyond the 30-label budget" in out["note"]
    # its split is not this version's: it is not continued
    with pytest.raises(CheckpointError, match="trained by an earlier pyro-vae"):
        train(small("m2", epochs=2, labels=30, val_size=None), run, resume=True, progress=False)


def test_files_with_minus_one_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 4)).astype(np.float32)
    y = np.where(np.arange(40) < 12, np.arange(40) % 3, -1)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    data = load_dataset(DataConfig(str(tmp_path / "xy.npz"), test_fraction=0.25))
    # the test set comes from the 12 labelled rows; every unlabelled row trains
    assert data.test.shape[0] == 3 and bool((data.test_labels >= 0).all())
    assert data.train.shape[0] == 37 and data.num_labelled == 9
    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y, x_test=x[:5], y_test=y[-5:])
    with pytest.raises(DataError, match="only training rows may be unlabelled"):
        load_dataset(DataConfig(str(tmp_path / "bad.npz")))


@pytest.mark.parametrize("model", ["m2", "m1m2"])
def test_patience_stops_on_the_validation_labels_and_stays_stopped(model: str, tmp_path) -> None:
    run = tmp_path / "run"
    first = train(small(model, epochs=12, labels=30, val_labels=4, patience=1), run, progress=False)
    h = first.history
    assert len(h) < 12  # 4 validation labels: their accuracy stops rising long before
    # it stopped after the first epoch that did not improve on the best, and kept the best
    assert h[-1]["epoch"] - h[-1]["best_epoch"] == 1
    assert max(r.get("val_accuracy", -1) for r in h) == h[h[-1]["best_epoch"] - 1]["val_accuracy"]
    more = train(
        small(model, epochs=20, labels=30, val_labels=4, patience=1),
        run,
        resume=True,
        progress=False,
    )
    assert len(more.history) == len(h)  # a stopped run stays stopped
    with pytest.raises(ConfigError, match="2}? stops on the validation accuracy"):
        train(small(model, labels=30, patience=2), progress=False)
