"""Training with Pyro's SVI: checkpoints every epoch, resumable, stops cleanly on a non-finite loss."""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from . import evaluate
from .boundary import check_fast_on, check_train_arguments
from .build import model_for, read_checkpoint, training_parts, validate
from .checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    atomic_write_text,
    check_optim_fits,
    load_model_state,
    non_finite,
    run_directory,
    save_checkpoint,
)
from .config import RunConfig
from .data import Dataset, fingerprint, load_dataset
from .engine import Engine, engine_for, running, set_rank_seed
from .errors import CheckpointError, ConfigError, TrainingDiverged, TrainingStopped
from .inventory import check_model_memory, user_parts
from .loggers import open_loggers
from .models import MODELS, Model, as_model
from .nn import network_precision
from .paramstore import OwnParameters
from .plan import Feed
from .progress import check_mode, epoch_line
from .progress import outputs as progress_outputs
from .runs import MODEL_TEXT, data_spec, load_run, resolve_device  # noqa: F401 (load_run: pyro_vae.train.load_run)
from .runspec import DESCRIPTION_KEY, MODEL_JSON, custom_name, rebuild_model, record_model
from .safety import append_text, read_text, run_path
from .usercode import note_parts, parts_boundary

#: options a resumed run may change: it can be trained for longer, moved to another device, take the
#: same steps by another route (--fast, --strategy, how the data are read), or log elsewhere
RESUMABLE_CHANGES = {
    ("train", "epochs"),
    ("train", "device"),
    ("train", "fast"),
    ("train", "strategy"),
    ("train", "loggers"),
    ("data", "loading"),
    ("data", "workers"),
}


@dataclass
class TrainResult:
    model: nn.Module
    dataset: Dataset
    config: RunConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None
    #: this process's rank in a data-parallel run; only rank 0 writes the run directory
    rank: int = 0
    #: the figures ``plots=True`` drew
    figures: list[Path] = field(default_factory=list)


def config_differences(a: RunConfig, b: RunConfig) -> list[tuple[str, str, Any, Any]]:
    out = []
    # compared as saved (JSON): a tuple option read back from a checkpoint is a list
    da, db = json.loads(a.to_json()), json.loads(b.to_json())
    for section in da:
        for key in da[section]:
            if da[section][key] != db[section][key]:
                out.append((section, key, da[section][key], db[section][key]))
    return out


def train(
    config: RunConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool | str = True,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train the model that ``config`` describes and return it with its per-epoch history.

    With ``run_dir`` the configuration, a checkpoint after every epoch and ``metrics.jsonl`` are
    written there; ``resume=True`` continues from its checkpoint and gives the same result as an
    uninterrupted run on the same device.

    ``progress``: ``True`` (``"auto"``) draws a bar where stderr is a terminal and prints one line
    per epoch on stdout where stdout is not one; ``"bar"``, ``"lines"`` choose; ``False`` is silent.

    ``dataset`` and ``model`` replace those the configuration describes. A model object is
    recorded as what it is (:mod:`pyro_vae.runspec`): ``config.json``'s model section from its own
    arguments, its description in the checkpoint and ``model.json``, from which ``load_run`` rebuilds
    it. The data's fingerprint is saved, so a run is never resumed or reloaded on other data than it
    was trained on. :func:`pyro_vae.train` is this in Python words.
    """
    config = check_train_arguments(config, run_dir, resume, progress, dataset, model)
    if run_dir is None and resume:
        raise ConfigError("resume needs the run directory to continue from")
    check_mode(progress)
    given = model
    if model is not None:
        model = as_model(model)  # a plain model/guide pair becomes a Model here, once
    config = validate(
        config, model_class=type(model) if model is not None else None, check_data=dataset is None
    )
    kind = type(model) if model is not None else MODELS.get(config.model.model)
    check_fast_on(config.train.fast, resolve_device(config.train.device))
    engine = engine_for(
        config.train, resolve_device(config.train.device), partial_steps=kind.partial_steps
    )
    engine.launch()  # under --devices N, Fabric starts the other processes here
    parts = user_parts(config, given, dataset)  # the object passed in, not its wrapper
    note_parts(parts)
    try:
        # an exception from a plugin's part, a model or a data set passed in is reported as theirs
        with running(engine), parts_boundary(parts, "training"):
            if run_dir is None:
                result = _train(config, None, resume, progress, dataset, model, engine)
            elif not engine.is_main:  # rank 0 owns and writes the run directory
                result = _train(config, Path(run_dir), resume, False, dataset, model, engine)
            else:
                with run_directory(Path(run_dir), create=not resume) as owned:
                    result = _train(config, owned, resume, progress, dataset, model, engine)
    except BaseException:
        if engine.is_main and engine.distributed:
            engine.stop_others()
        engine.close(clean=False)
        raise
    engine.close()  # every process: the run's end, reached together
    if given is not None:
        result.model = given  # the object the caller passed, trained
    return result


def _train(
    config: RunConfig,
    run_dir: Path | None,
    resume: bool,
    progress: bool | str,
    dataset: Dataset | None,
    model: Model | None,
    engine: Engine,
) -> TrainResult:
    checkpoint = read_checkpoint(run_dir / CHECKPOINT) if resume else None
    described = None  # a model object's description (pyro_vae.describe)
    if model is not None and model.built_from != config.model:
        legacy = checkpoint is not None and DESCRIPTION_KEY not in checkpoint
        config, described = record_model(config, model.recorded(), legacy=legacy)
    tcfg = config.train
    if resume:
        if tcfg.epochs < checkpoint["epoch"]:
            raise ConfigError(
                f"--resume: the run in {run_dir} has trained {checkpoint['epoch']} epochs; "
                f"--epochs {tcfg.epochs} would go back. Pass --epochs {checkpoint['epoch']} or more"
            )
        changed = [
            d
            for d in config_differences(checkpoint["config"], config)
            if d[:2] not in RESUMABLE_CHANGES
        ]
        if changed:
            listing = "; ".join(f"{s}.{k}: {old!r} -> {new!r}" for s, k, old, new in changed)
            raise ConfigError(
                f"--resume continues the run in {run_dir} with its own configuration, but these options "
                f"differ: {listing}. Drop them, or start a new run in another --run-dir"
            )
    elif run_dir is not None and engine.is_main and (run_dir / CHECKPOINT).exists():
        raise ConfigError(
            f"{run_dir} already holds a trained run; pass --resume to continue it, "
            "or choose another --run-dir"
        )

    device = engine.device
    writes = run_dir is not None and engine.is_main
    pyro.set_rng_seed(tcfg.seed)
    data = dataset if dataset is not None else load_dataset(config.data)
    data.check()  # a data set built in Python meets the same rules as a loaded one
    data_id = fingerprint(data)
    spec = data_spec(data, from_python=dataset is not None)
    if checkpoint is not None and checkpoint.get("data_fingerprint", data_id) != data_id:
        raise ConfigError(
            f"--resume: the data differ from those the run in {run_dir} was trained on (the file "
            "changed, or another data set was passed); start a new run in another --run-dir"
        )
    if model is None and checkpoint is not None and DESCRIPTION_KEY in checkpoint:
        model = rebuild_model(checkpoint[DESCRIPTION_KEY], run_dir)
        described = checkpoint[DESCRIPTION_KEY]
    if model is None:  # the size of what config.model describes, before it is allocated
        check_model_memory(config.model, data.x_shape, data.num_classes, device)
    model = model_for(config, data, model)
    # every row of a lazily read training set, by its range (read once, in chunks)
    model.check_data(data.train if isinstance(data.train, torch.Tensor) else _extremes(data))
    model.check_data(data.test)
    model.to(device)
    data = data.to(device, loading=config.data.loading, workers=config.data.workers)

    optim, plan = training_parts(config, model, data)
    prefix = model.store_prefix()
    feed = Feed(data, tcfg.seed, engine.rank, engine.world)

    start_epoch, history = 0, []
    set_rank_seed(tcfg.seed, engine)
    if checkpoint is not None:
        path = run_dir / CHECKPOINT
        load_model_state(model, checkpoint["model"], path)
        check_optim_fits(checkpoint["optim"], model, path)
        optim.set_state(_named(checkpoint["optim"], "{model}", prefix, checkpoint["config"]))
        rng = checkpoint["rng"]
        with _restoring(path, "rng"):
            _set_rng_state(rng["ranks"][engine.rank] if "ranks" in rng else rng, device)
        if "feed" in checkpoint:  # the data order (checkpoints before scale-out have none)
            with _restoring(path, "feed"):
                feed.load_state_dict(checkpoint["feed"])
        start_epoch = checkpoint["epoch"]
        with _restoring(path, "plan"):
            plan.load_state_dict(checkpoint.get("plan", {}))
        history = _read_metrics(run_dir / METRICS)[:start_epoch]
    engine.attach(model)
    if writes:  # created and owned by run_directory()
        # a run directory may come from someone else: no write goes through a link planted there
        atomic_write_text(run_path(run_dir, CONFIG), config.to_json())
        atomic_write_text(run_path(run_dir, METRICS), "".join(json_line(r) for r in history))
        if described is not None:
            recorded = model.recorded()
            atomic_write_text(
                run_path(run_dir, MODEL_TEXT), f"{custom_name(recorded)}\n{recorded}\n"
            )
            atomic_write_text(run_path(run_dir, MODEL_JSON), json.dumps(described, indent=2) + "\n")
    # the CSV log always, and --logger's; rank 0 only, as for every file of the run
    run_loggers = open_loggers(tcfg.loggers, run_dir, config, resume=resume) if writes else None
    status = "failed"

    # a bar on a terminal, one line per epoch elsewhere (progress.outputs); rank 0 only
    show_bar, show_lines = progress_outputs(progress) if engine.is_main else (False, False)
    bar = _bar(show_bar, (tcfg.epochs - start_epoch) * plan.steps_per_epoch)
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            if plan.done():  # e.g. M2's early stopping on its validation labels
                break
            plan.begin_epoch(epoch)
            model.train()
            t0 = time.perf_counter()
            total, seen = 0.0, 0
            # the networks autocast under --precision bf16-mixed: training steps only
            with network_precision(engine.dtype), OwnParameters(model):
                for step, (loss, size) in enumerate(plan.epoch(feed)):
                    if not math.isfinite(loss):
                        raise TrainingDiverged(
                            f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; "
                            f"{_kept(run_dir, epoch)}. "
                            "Try a lower --lr, a different --seed, or check the data"
                        )
                    total += loss
                    seen += size
                    bar.update()
                    if step % 10 == 0:
                        bar.set_postfix_str(
                            f"epoch {epoch + 1}/{tcfg.epochs} loss/image {loss / size:.2f}"
                        )
            epoch_time = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "train_elbo": -total / seen,
                "test_elbo": evaluate.elbo(model, data.test, num_particles=tcfg.eval_particles),
                "epoch_time": epoch_time,
            }
            record.update(plan.end_epoch(data))  # e.g. M2's validation and test accuracy
            optim_state = optim.get_state()
            bad = non_finite(
                {"test_elbo": record["test_elbo"], "model": dict(model.named_parameters())}
            ) or non_finite(optim_state, "optimiser state ")
            bad = engine.broadcast(bad)  # every process stops, or none
            if bad is not None:
                raise TrainingDiverged(
                    f"training diverged in epoch {epoch + 1}: {bad} is not finite; "
                    f"{_kept(run_dir, epoch)}. Try a lower --lr, a different --seed, or check the data"
                )
            history.append(record)
            bar.set_postfix_str(
                f"epoch {epoch + 1}/{tcfg.epochs} test ELBO {record['test_elbo']:.2f}"
            )
            if show_lines:
                line = epoch_line(
                    epoch + 1,
                    tcfg.epochs,
                    record["train_elbo"],
                    record["test_elbo"],
                    epoch_time,
                    seen,
                )
                print(line, flush=True)
            rng = _rng_state(device)
            if engine.distributed:
                rng["ranks"] = engine.gather(dict(rng))
            failure: BaseException | None = None
            if writes:
                try:
                    append_text(run_path(run_dir, METRICS), json_line(record))
                    # before the checkpoint: a crash in between repeats an epoch, never loses one
                    run_loggers.log(record, epoch + 1)
                    save_checkpoint(
                        run_path(run_dir, CHECKPOINT),
                        config,
                        epoch + 1,
                        model=model.state_dict(),
                        optim=_named(optim_state, prefix, "{model}"),
                        rng=rng,
                        plan=plan.state_dict(),
                        feed=feed.state_dict(),
                        data_fingerprint=data_id,
                        data_spec=spec,
                        **({DESCRIPTION_KEY: described} if described is not None else {}),
                    )
                except Exception as e:  # the others must not wait for rank 0 in the next step
                    failure = e
            if engine.any(failure is not None):
                if failure is not None:
                    raise failure
                raise TrainingStopped("rank 0 could not write the run directory; stopping too")
        status = "success"
    finally:
        bar.close()
        forget_params(prefix)
        if run_loggers is not None:
            run_loggers.close(status)
    plan.finish()  # e.g. M2 returns to the epoch its validation set picked
    return TrainResult(model, data, config, history, run_dir, engine.rank)


def _extremes(data: Dataset) -> torch.Tensor:
    """Two rows standing for a lazily read training set: its least and its greatest value (read
    once, in chunks, over every row), so that a model checks the whole set's range without
    holding it in memory."""
    lo, hi = data.train.value_range(scan=True)
    shape = (1, *data.train.shape[1:])
    return torch.cat([torch.full(shape, lo), torch.full(shape, hi)])


@contextlib.contextmanager
def _restoring(path: Path, entry: str) -> Iterator[None]:
    """A checkpoint entry that passed the structure check but does not restore is still damage."""
    try:
        yield
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise CheckpointError(
            f"{path.name}: {entry!r} cannot be restored ({type(e).__name__}: {e}): the file is "
            f"damaged or not from pyro-vae ({path}); restore it from a backup, or retrain without "
            "--resume"
        ) from None


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(show: bool, total: int) -> Any:
    if not show:
        return _NoBar()
    from tqdm.auto import tqdm  # only where a bar is drawn

    return tqdm(total=total, unit="step", dynamic_ncols=True)


def json_line(record: dict[str, Any]) -> str:
    """One line of ``metrics.jsonl``: valid JSON, a non-finite number written as null and named
    under ``"non_finite"``."""
    clean, bad = {}, []
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            clean[key] = None
            bad.append(key)
        else:
            clean[key] = value
    if bad:
        clean["non_finite"] = bad
    return json.dumps(clean, allow_nan=False) + "\n"


def _kept(run_dir: Path | None, epoch: int) -> str:
    """What a diverged run leaves behind, for its error message."""
    if run_dir is not None and epoch:
        return f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}"
    return "nothing was saved"


def _named(
    state: dict[str, Any], old: str | None, new: str | None, config: RunConfig | None = None
) -> dict[str, Any]:
    """Optimiser state with parameter names moved from prefix ``old`` to ``new``.

    Checkpoints store names relative to the model (``{model}$$$encoder...``) because each model
    object has its own name in the parameter store; checkpoints of pyro-vae 0.1 stored the model's
    registered name (``vae$$$...``), read here too.
    """
    if old is None or new is None:
        return dict(state)
    legacy = f"{config.model.model}$$$" if config is not None else None
    out = {}
    for key, value in state.items():
        if key.startswith(old):
            key = new + key[len(old) :]
        elif legacy is not None and key.startswith(legacy):
            key = new + key[len(legacy) :]
        out[key] = value
    return out


def forget_params(prefix: str | None) -> None:
    """Drop a model's entries from Pyro's global parameter store after training.

    The module keeps its parameters; ``pyro.module`` registers them again on the next use. Without
    this, every model trained in a process would stay alive in the store.
    """
    if prefix is None:
        return
    store = pyro.get_param_store()
    for name in [n for n in store.keys() if n.startswith(prefix)]:
        del store[name]


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``: one JSON object a line, each with its whole-number
    ``epoch``; anything else is a one-line :class:`CheckpointError` naming the line."""
    if not os.path.lexists(path):
        return []
    text = read_text(path, "metrics.jsonl")
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CheckpointError(
                f"{path} line {i} is not JSON ({e}); delete the file to resume without the old "
                "metrics"
            ) from None
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            raise CheckpointError(
                f"{path} line {i} is not a record of an epoch (a JSON object with a whole-number "
                "'epoch'); delete the file to resume without the old metrics"
            )
        records.append(record)
    return records
