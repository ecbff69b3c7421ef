"""The semi-supervised experiment: models x label budgets x labelled subsets, every label counted.

:func:`semi_supervised` (and ``pyro-vae semi-supervised``) trains one run per (model, budget, subset)
in its own run directory under ``OUT/runs/``, writes each finished run's row to that directory
(``result.json``), and gathers every finished row into ``OUT/results.csv`` and a figure,
``OUT/accuracy.png`` (test accuracy against labels used, mean and spread over the subsets, log x).

It resumes: a finished run is never trained again, and a run stopped part-way continues from its last
checkpoint (with the same result as an uninterrupted one), so killing the experiment and starting it
again with the same arguments loses at most an epoch; a larger ``--epochs`` extends every run. Processes share the work with ``shard=(i, n)``
(``--shard i/n``): process ``i`` trains every ``n``-th run, each in its own locked run directory,
and every process rewrites the table from all rows present.

A subset's seed is the run's ``--seed``: it draws the class-balanced labelled subset (and seeds
training). The labels used are the run's own count (training + validation, ``--val-labels`` or
``--val-size``); by default the reported model is the last epoch's, selected with no label.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyro
import torch

from .build import read_checkpoint, validate
from .checkpoint import (
    CHECKPOINT,
    CONFIG,
    atomic_write_bytes,
    atomic_write_text,
)
from .config import RunConfig, changed_fields, default_of
from .data import UNLABELLED, Dataset, load_dataset
from .errors import ConfigError, DataError, PyroVAEError
from .models import MODEL_SPECIFIC, MODELS, Model

RESULTS = "results.csv"
FIGURE = "accuracy.png"
RESULT = "result.json"
#: the table's columns, in order
COLUMNS = (
    "model",
    "dataset",
    "train_images",
    "labels_used",
    "train_labels",
    "val_labels",
    "extra_val_labels",
    "subset",
    "test_accuracy",
    "test_elbo",
    "epochs",
    "selected_epoch",
    "stopped_early",
    "seconds",
)
#: the fixed seed of a training subset (``train_subset``): every run of an experiment sees the same
_SUBSET_SEED = 1234


def training_subset(data: Dataset, n: int) -> Dataset:
    """The first ``n`` rows of a fixed random permutation of the training set (labels with them):
    a smaller experiment whose every run sees the same images."""
    total = data.train.shape[0]
    if not 0 < n <= total:
        raise ConfigError(f"--train-subset must lie in 1..{total}, got {n}")
    if n == total:
        return data
    keep = torch.randperm(total, generator=torch.Generator().manual_seed(_SUBSET_SEED))[:n]
    keep = keep.sort().values
    labels = None if data.train_labels is None else data.train_labels[keep]
    train = data.train[keep] if isinstance(data.train, torch.Tensor) else data.rows(keep)
    return replace(data, train=train, train_labels=labels)


def _runs(
    models: Sequence[str], budgets: Sequence[int | None], seeds: Sequence[int]
) -> list[tuple[str, int | None, int]]:
    return [(m, b, s) for m in models for b in budgets for s in seeds]


def run_name(model: str, budget: int | None, seed: int) -> str:
    return f"{model}-{'own' if budget is None else f'labels{budget}'}-subset{seed}"


def semi_supervised(
    base: RunConfig,
    out_dir: str | Path,
    *,
    models: Sequence[str] = ("m2",),
    budgets: Sequence[int] = (100,),
    subsets: int | Sequence[int] = 3,
    dataset: Dataset | None = None,
    train_subset: int = 0,
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Train every (model, budget, subset) run not yet finished in ``out_dir``; return every row.

    ``base`` gives everything but the model, ``--labels`` and ``--seed``: the networks, epochs,
    ``--val-labels`` and so on. ``budgets`` are ``--labels`` values (class-balanced subsets of a fully
    labelled training set); a data set that marks its unlabelled rows with -1 brings its own budget,
    and ``budgets`` must then be empty. ``subsets`` is a number of subsets (seeds ``0..n-1``) or the
    seeds themselves. ``dataset`` replaces ``base.data``; ``train_subset`` keeps that many training
    images (a fixed random subset, the same for every run; 0: all).
    """
    out = Path(out_dir)
    seeds = list(range(subsets)) if isinstance(subsets, int) else list(subsets)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"the subsets must be distinct seeds, at least one; got {seeds}")
    index, count = shard
    if not 0 <= index < count:
        raise ConfigError(f"--shard {index}/{count}: the index must lie in 0..{count - 1}")
    for name in models:
        if not semi_supervised_model(name):
            takers = [n for n in MODELS if semi_supervised_model(n)]
            raise ConfigError(
                f"--model {name} is not semi-supervised; the experiment runs {', '.join(takers)}"
            )
    if "labels" in base.model.model_options:
        raise ConfigError("the experiment sets --labels from its budgets; pass --budgets instead")
    _check_specific(base, models)
    data = dataset if dataset is not None else load_dataset(base.data)
    if data.train_labels is None:
        raise DataError(
            "the semi-supervised experiment needs a labelled data set (digits, mnist, "
            "fashion-mnist, or a file with y_train; -1 marks an unlabelled row)"
        )
    if train_subset:
        data = training_subset(data, train_subset)
    own = bool((data.train_labels == UNLABELLED).any())
    if own and budgets:
        raise ConfigError(
            f"this data set marks its unlabelled rows (-1): its {data.num_labelled} labelled rows "
            "are the budget; drop --budgets"
        )
    if not own and not budgets:
        raise ConfigError("pass --budgets N [N ...]: the label budgets to compare")
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(
                f"--budgets are numbers of labelled training images, each at least 1; got {b!r}"
            )
    runs = _runs(models, [None] if own else list(budgets), seeds)
    mine = runs[index::count]
    for i, (name, budget, seed) in enumerate(mine):
        run_dir = out / "runs" / run_name(name, budget, seed)
        config = _for_model(base, name)
        options = dict(config.model.model_options)
        if budget is not None:
            options["labels"] = budget
        config = config.replace(
            model={"model": name, "model_options": options}, train={"seed": seed}
        )
        config = validate(config, check_data=dataset is None and not train_subset)
        if _finished(run_dir, config, data):
            continue
        if log:
            log(f"[{i + 1}/{len(mine)}] {run_name(name, budget, seed)}: training")
        row = _one_run(config, run_dir, data, progress)
        if log:
            log(
                f"[{i + 1}/{len(mine)}] {run_name(name, budget, seed)}: test accuracy "
                f"{row['test_accuracy']:.4f} with {row['labels_used']} labels, "
                f"{row['seconds']:.0f} s"
            )
        gather(out)  # after every run: a stopped experiment keeps its table
    return gather(out)


def _finished(run_dir: Path, config: RunConfig, data: Dataset) -> bool:
    """Whether the run has its row for ``config`` (a larger ``--epochs`` extends it); a run there
    with other options or data is refused, never reported as this one."""
    from .train import RESUMABLE_CHANGES, config_differences

    try:
        row = json.loads((run_dir / RESULT).read_text())
        saved = RunConfig.from_json((run_dir / CONFIG).read_text())
    except (OSError, ValueError, PyroVAEError):
        return False
    changed = [d for d in config_differences(saved, config) if d[:2] not in RESUMABLE_CHANGES]
    if changed or row.get("train_images") != data.train.shape[0]:
        listing = "; ".join(f"{s}.{k}: {old!r} -> {new!r}" for s, k, old, new in changed)
        raise ConfigError(
            f"{run_dir} holds a run of this experiment with other options or data "
            f"({listing or 'another training set'}); use another --out for another experiment"
        )
    epochs = row.get("epochs", 0)
    # a run stopped early (--patience) stays stopped however many epochs are asked for
    return epochs == config.train.epochs or (bool(row.get("stopped_early")) and epochs > 0)


def semi_supervised_model(name: str) -> bool:
    """Whether the registered model ``name`` learns from a label budget (takes ``labels``)."""
    return "labels" in MODELS.parameters(name)


def _check_specific(base: RunConfig, models: Sequence[str]) -> None:
    """Refuse a model-specific option that none of the experiment's models takes."""
    for key in sorted(base.model.model_options):
        if not any(key in MODELS.parameters(m) for m in models):
            takers = [n for n in MODELS if key in MODELS.parameters(n)]
            raise ConfigError(
                f"--{key.replace('_', '-')} is not used by any of --models {' '.join(models)}; "
                f"it is an option of {', '.join(takers) or 'no registered model'}"
            )
    for target in sorted(changed_fields(base) & MODEL_SPECIFIC):
        if not any(target in MODELS.get(m).options for m in models):
            flag = "--" + target.split(".", 1)[1].replace("_", "-")
            raise ConfigError(f"{flag} is not used by any of --models {' '.join(models)}")


def _for_model(base: RunConfig, name: str) -> RunConfig:
    """``base`` with only the model-specific options that model ``name`` takes (each of the others
    is taken by another model of the experiment: :func:`_check_specific`)."""
    takes = MODELS.parameters(name)
    options = {k: v for k, v in base.model.model_options.items() if k in takes}
    reset: dict[str, dict[str, Any]] = {"model": {"model_options": options}}
    for target in (changed_fields(base) & MODEL_SPECIFIC) - MODELS.get(name).options:
        section, field = target.split(".", 1)
        reset.setdefault(section, {})[field] = default_of(section, field)
    return base.replace(**reset)


def _one_run(config: RunConfig, run_dir: Path, data: Dataset, progress: bool) -> dict[str, Any]:
    from . import evaluate
    from .train import train

    resume = (run_dir / CHECKPOINT).exists()
    result = train(config, run_dir, resume=resume, dataset=data, progress=progress)
    model = result.model
    if not isinstance(model, Model):
        raise TypeError(f"{type(model).__name__} is not a pyro-vae model")
    model.eval()
    plan_state = read_checkpoint(run_dir / CHECKPOINT).get("plan", {})
    summary = model.run_summary(config, plan_state, data)
    pyro.set_rng_seed(config.train.seed)  # the test ELBO's draws: the same on a rerun
    with torch.no_grad():
        test_elbo = evaluate.elbo(model, data.test, num_particles=config.train.eval_particles)
    history = result.history
    row = {
        "model": config.model.model,
        "dataset": data.name,
        "train_images": int(data.train.shape[0]),
        **{
            k: summary[k] for k in ("labels_used", "train_labels", "val_labels", "extra_val_labels")
        },
        "subset": config.train.seed,
        "test_accuracy": model.accuracy(data.test, data.test_labels),
        "test_elbo": float(test_elbo),
        "epochs": len(history),
        "selected_epoch": int(history[-1].get("best_epoch", len(history))) if history else 0,
        "stopped_early": int(len(history) < config.train.epochs),
        "seconds": sum(h["epoch_time"] for h in history),
    }
    atomic_write_text(run_dir / RESULT, json.dumps(row, indent=1) + "\n")
    return row


def gather(out_dir: str | Path) -> list[dict[str, Any]]:
    """Every finished run's row under ``out_dir``, written to ``results.csv`` and drawn in
    ``accuracy.png``; returned sorted by model, labels used and subset."""
    out = Path(out_dir)
    rows = []
    for path in sorted((out / "runs").glob(f"*/{RESULT}")):
        try:
            rows.append(json.loads(path.read_text()))
        except json.JSONDecodeError:  # written atomically; a damaged file is a rerun
            continue
    rows.sort(key=lambda r: (r["model"], r["labels_used"], r["subset"]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RESULTS, buf.getvalue())
    if rows:
        plot_accuracy(rows, out / FIGURE)
    return rows


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv``, typed."""
    ints = {"train_images", "labels_used", "train_labels", "val_labels", "extra_val_labels"}
    ints |= {"subset", "epochs", "selected_epoch", "stopped_early"}
    floats = {"test_accuracy", "test_elbo", "seconds"}
    with open(path, newline="") as f:
        return [
            {k: int(v) if k in ints else float(v) if k in floats else v for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation of the test accuracy over the subsets of each (model, labels
    used)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["labels_used"]), []).append(r["test_accuracy"])
    return [
        {
            "model": m,
            "labels_used": n,
            "subsets": len(accs),
            "mean": statistics.mean(accs),
            "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "accuracies": accs,
        }
        for (m, n), accs in sorted(groups.items())
    ]


def plot_accuracy(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Test accuracy against labels used (log x): each subset a dot, each model's mean a line
    with its standard deviation as error bars."""
    from .images import _subplots  # matplotlib's Figure without pyplot's global state

    fig, ax = _subplots(figsize=(6, 4))
    stats = summarise(rows)
    for model in sorted({s["model"] for s in stats}):
        mine = [s for s in stats if s["model"] == model]
        x = [s["labels_used"] for s in mine]
        line = ax.errorbar(
            x,
            [100 * s["mean"] for s in mine],
            yerr=[100 * s["sd"] for s in mine],
            marker="o",
            capsize=3,
            label=model,
        )
        dots = [(r["labels_used"], 100 * r["test_accuracy"]) for r in rows if r["model"] == model]
        ax.scatter(*zip(*dots), s=10, alpha=0.4, color=line[0].get_color())
    ax.set_xscale("log")
    ticks = sorted({s["labels_used"] for s in stats})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("labels used (training + validation)")
    ax.set_ylabel("test accuracy (%)")
    n = max(s["subsets"] for s in stats)
    ax.set_title(f"mean ± sd over up to {n} labelled subsets")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    # atomically: processes sharing the experiment redraw it
    atomic_write_bytes(path, lambda f: fig.savefig(f, dpi=120, format="png"))
    return path


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard takes I/N, e.g. 0/2, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: N must be positive and I lie in 0..N-1")
    return i, n
