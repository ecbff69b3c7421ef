"""Training with Pyro's SVI: checkpoints every epoch, resumable, stops cleanly on a non-finite loss."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI
from torch import nn
from tqdm.auto import tqdm

from . import evaluate
from .checkpoint import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    atomic_write_text,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from .config import RunConfig
from .data import Dataset, batches, load_dataset
from .errors import CheckpointError, ConfigError, TrainingDiverged
from .models import build_model
from .objectives import build_objective
from .optim import adam

#: options a resumed run may change: it can be trained for longer, or moved to another device
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "device")}


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; otherwise the named device, checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {name} asks for CUDA, but this machine has no usable GPU; use --device cpu"
        )
    return device


@dataclass
class TrainResult:
    model: nn.Module
    dataset: Dataset
    config: RunConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    run_dir: Path | None = None


def config_differences(a: RunConfig, b: RunConfig) -> list[tuple[str, str, Any, Any]]:
    out = []
    da, db = a.to_dict(), b.to_dict()
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
    progress: bool = True,
    dataset: Dataset | None = None,
    model: nn.Module | None = None,
) -> TrainResult:
    """Train the model that ``config`` describes and return it with its per-epoch history.

    With ``run_dir`` the configuration, a checkpoint after every epoch and ``metrics.jsonl`` are
    written there; ``resume=True`` continues from its checkpoint and gives the same result as an
    uninterrupted run on the same device. ``dataset`` and ``model`` override those built from the
    configuration (a custom model is then rebuilt by the caller when a run is reloaded).
    """
    config.validate()
    tcfg = config.train
    run_dir = Path(run_dir) if run_dir is not None else None
    checkpoint = None
    if resume:
        if run_dir is None:
            raise ConfigError("resume needs the run directory to continue from")
        checkpoint = load_checkpoint(run_dir / CHECKPOINT)
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
    elif run_dir is not None and (run_dir / CHECKPOINT).exists():
        raise ConfigError(
            f"{run_dir} already holds a trained run; pass --resume to continue it, "
            "or choose another --run-dir"
        )

    device = resolve_device(tcfg.device)
    pyro.set_rng_seed(tcfg.seed)
    data = dataset if dataset is not None else load_dataset(config.data)
    if model is None:
        model = build_model(config.model, data.x_shape, data.num_classes)
    check = getattr(model, "check_data", None)
    if check is not None:
        check(data.train)
        check(data.test)
    model.to(device)
    data = data.to(device)

    # Pyro's param store is global: a stale entry under the same name would be optimised in place
    # of this model's parameters, so every training run starts from an empty store.
    pyro.clear_param_store()
    optim = adam(tcfg.lr)
    objective = build_objective(
        tcfg.objective, num_particles=tcfg.particles, **tcfg.objective_options
    )
    svi = SVI(model.model, model.guide, optim, objective)
    drop_last = tcfg.objective.startswith("jit")
    # models that learn from labels (m2, cvae) bring their own epoch of steps; the protocol is
    # documented on pyro_vae.models.cvae.LabelledPlan
    make_plan = getattr(model, "training_plan", None)
    plan = make_plan(data, config, optim, objective) if make_plan is not None else None
    if plan is None and tcfg.labels:
        raise ConfigError(
            f"--labels is for semi-supervised models (m2), not --model {config.model.model}"
        )

    start_epoch, history = 0, []
    if checkpoint is not None:
        load_model_state(model, checkpoint["model"], run_dir / CHECKPOINT)
        optim.set_state(checkpoint["optim"])
        _set_rng_state(checkpoint["rng"], device)
        start_epoch = checkpoint["epoch"]
        if plan is not None:
            plan.load_state_dict(checkpoint.get("plan", {}))
        history = _read_metrics(run_dir / METRICS)[:start_epoch]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG, config.to_json())
        atomic_write_text(run_dir / METRICS, "".join(json.dumps(r) + "\n" for r in history))

    n = data.train.shape[0]
    steps_per_epoch = n // tcfg.batch_size if drop_last else math.ceil(n / tcfg.batch_size)
    if plan is not None:
        steps_per_epoch = plan.steps_per_epoch
    if steps_per_epoch < 1:
        raise ConfigError(f"--batch-size {tcfg.batch_size} is larger than the {n} training points")
    bar = tqdm(
        total=(tcfg.epochs - start_epoch) * steps_per_epoch,
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    hook = getattr(objective, "set_epoch", None)  # KL annealing and other schedules
    try:
        for epoch in range(start_epoch, tcfg.epochs):
            if hook is not None:
                hook(epoch)
            model.train()
            t0 = time.perf_counter()
            x = data.epoch_train()
            total, seen = 0.0, 0
            steps = (
                plan.epoch(x)
                if plan is not None
                else (
                    (svi.step(x[idx]), idx.shape[0])
                    for idx in islice(batches(n, tcfg.batch_size, device), steps_per_epoch)
                )
            )
            for step, (loss, size) in enumerate(steps):
                if not math.isfinite(loss):
                    kept = (
                        f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}"
                        if run_dir and epoch
                        else "nothing was saved"
                    )
                    raise TrainingDiverged(
                        f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}; {kept}. "
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
            if plan is not None:
                record.update(plan.end_epoch(data))  # e.g. M2's validation and test accuracy
            history.append(record)
            bar.set_postfix_str(
                f"epoch {epoch + 1}/{tcfg.epochs} test ELBO {record['test_elbo']:.2f}"
            )
            if run_dir is not None:
                with open(run_dir / METRICS, "a") as f:
                    f.write(json.dumps(record) + "\n")
                save_checkpoint(
                    run_dir / CHECKPOINT,
                    config,
                    epoch + 1,
                    model=model.state_dict(),
                    optim=optim.get_state(),
                    rng=_rng_state(device),
                    **({"plan": plan.state_dict()} if plan is not None else {}),
                )
    finally:
        bar.close()
    if plan is not None:
        plan.finish()  # e.g. M2 returns the epoch its validation set picked
    return TrainResult(model, data, config, history, run_dir)


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
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path} is corrupt ({e}); delete it to resume without the old metrics"
        ) from None


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[RunConfig, nn.Module, Dataset]:
    """Rebuild a trained run's model and data set from its directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no run directory at {run_dir}")
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    config: RunConfig = ckpt["config"]
    dev = resolve_device(device)
    pyro.set_rng_seed(config.train.seed)
    data = load_dataset(config.data)
    model = build_model(config.model, data.x_shape, data.num_classes)
    # a plan's selected epoch (M2's best validation accuracy) is the run's model; else the last epoch
    selected = ckpt.get("plan", {}).get("selected_model", ckpt["model"])
    load_model_state(model, selected, run_dir / CHECKPOINT)
    model.to(dev).eval()
    return config, model, data.to(dev)
