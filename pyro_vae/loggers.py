"""Experiment logs: a CSV log always, TensorBoard, W&B or MLflow (Lightning's loggers) on request.

Each logger writes under ``<run dir>/logs/<name>/``, beside the run's own ``metrics.jsonl``::

    <run dir>/logs/
        csv/metrics.csv             one row per epoch: a "step" column (the epoch) and one per metric
        csv/hparams.yaml            the run configuration, flattened (train.lr: 0.001)
        tensorboard/events.out.tfevents.*    tensorboard --logdir <run dir>/logs/tensorboard
        wandb/run_id                the W&B run this run directory logs to (reused on --resume)
        wandb/wandb/                W&B's own files (offline runs: wandb sync <run dir>/logs/wandb/wandb)
        mlflow/run_id               the MLflow run this run directory logs to (reused on --resume)
        mlflow/mlflow.db            the MLflow store, unless $MLFLOW_TRACKING_URI names another
        mlflow/artifacts/           its artifact store (mlflow ui --backend-store-uri sqlite:///...)

A record is logged at step = its epoch, numeric entries only (not ``epoch`` itself: it is the step).
A non-finite value is logged as it is, so that a diverging metric shows where it diverged (the CSV
reads ``nan``; MLflow's database keeps infinities as the largest float).

The configuration is logged as hyperparameters when a logger starts its record of a run. On
``--resume`` every logger continues its record in place, and those that already hold one (TensorBoard,
W&B, MLflow) are not given the hyperparameters again; the CSV log's ``hparams.yaml`` is rewritten
(overwritten, so never duplicated), to match the ``config.json`` that the resumed run writes.

A run that resumes repeats the epochs after its checkpoint. Those epochs may already be in the logs if
the previous attempt stopped between logging an epoch and checkpointing it: the CSV log drops its rows
from the first epoch logged on resume, and TensorBoard hides its events from that step (a
``purge_step``), as ``metrics.jsonl`` is cut back to the checkpoint; W&B and MLflow cannot drop a
point, and show such an epoch twice at the same step.

Lightning is imported only when one of its loggers is asked for: it takes seconds to import, and a
process that imports it trains more slowly afterwards (see :class:`CSVLog`).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import numbers
import os
import secrets
import string
import warnings
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .registry import Registry, coerce
from .safety import append_text, read_text, run_path

if TYPE_CHECKING:
    from lightning.fabric.loggers import Logger

    from .config import RunConfig

#: the directory under a run directory that holds every logger's files, one subdirectory each
LOGS = "logs"
#: the always-on CSV log's name: ``<run dir>/logs/csv/``
CSV = "csv"
#: the file (in ``logs/wandb/``, ``logs/mlflow/``) naming the run a run directory logs to
RUN_ID = "run_id"

#: name -> ``factory(run_dir, name, *, resume=False) -> Lightning logger`` writing under
#: ``<run_dir>/logs/<name>/``. ``name`` is the run's display name (the run directory's name);
#: ``resume`` asks to continue the record a logger already holds in ``run_dir``, if any.
LOGGERS: Registry[Logger] = Registry("logger", supplied=("run_dir", "name", "resume"))

#: name -> (modules, any one of which the logger can use; the pyro-vae extra that installs one)
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}

#: the metrics TensorBoard's HParams dashboard shows beside each run's hyperparameters
_HPARAM_METRICS = ("test_elbo", "train_elbo")


def _installed(module: str) -> bool:
    # a directory of that name in the working directory (W&B leaves ./wandb/ behind) is found as a
    # namespace package, which is not the package installed
    spec = find_spec(module)
    return spec is not None and spec.origin not in (None, "namespace")


def _names(names: Any) -> tuple[str, ...]:
    return coerce(names, tuple[str, ...], "--logger")


def check_loggers(names: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless every name is a registered logger whose package is here.

    Refuses an unknown name, a name given twice, ``csv`` (the CSV log is always written) and a logger
    whose package is not installed (the message gives the ``pip install`` that adds it). Cheap: it
    looks packages up without importing them.
    """
    names = _names(names)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # before the other checks: the one mistake in the whole list, whatever its names
        raise ConfigError(f"--logger {twice[0]} is given twice; name each logger once")
    for name in names:
        if name == CSV:
            raise ConfigError(
                f"--logger {CSV}: the CSV log is always written (to <run dir>/{LOGS}/{CSV}/"
                "metrics.csv); drop --logger csv"
            )
        try:
            LOGGERS.get(name)  # loads entry-point plugins before giving up on a name
        except ConfigError:
            raise ConfigError(
                f"--logger {name}: unknown logger; choose from {', '.join(LOGGERS.names())} "
                f"(the CSV log is always written; a plugin's loggers appear once it is imported: "
                "--import MODULE)"
            ) from None
        if name in _NEEDS:
            modules, extra = _NEEDS[name]
            if not any(_installed(m) for m in modules):
                raise ConfigError(
                    f"--logger {name} needs the {modules[0]} package, which is not installed: "
                    f'pip install "pyro-vae[{extra}]"'
                )


def hyperparameters(config: RunConfig | Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """The run configuration as flat hyperparameters: ``{"train.lr": 0.001, ...}``.

    Strings, integers, floats and booleans are kept; anything else (tuples, dicts, None) becomes its
    JSON text (``"[32]"``, ``"{}"``, ``"null"``), which every logger can store and show.
    """
    sections = config if isinstance(config, Mapping) else config.to_dict()
    out: dict[str, str | int | float | bool] = {}
    for section, fields in sorted(sections.items()):
        for key, value in sorted(fields.items()):
            if isinstance(value, (str, bool, int, float)):
                out[f"{section}.{key}"] = value
            else:
                out[f"{section}.{key}"] = json.dumps(value, sort_keys=True, default=str)
    return out


def _metrics(record: Mapping[str, Any]) -> dict[str, int | float]:
    out: dict[str, int | float] = {}
    for key, value in record.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        out[key] = int(value) if isinstance(value, numbers.Integral) else float(value)
    return out


class Resumable:
    """A logger that can take back what a resumed run repeats: :class:`RunLoggers` calls
    :meth:`continue_at` with the first epoch a resumed run logs, before it logs it."""

    def continue_at(self, step: int) -> None:
        """Forget (or hide) what was logged at ``step`` and after."""


class RunLoggers:
    """The loggers of one run: :meth:`log` a record per epoch, then :meth:`close`.

    ``loggers`` is the list, the CSV log first. Use on the process of rank 0 only. As a context
    manager it closes with status ``"failed"`` when the block raises.
    """

    def __init__(self, loggers: list[Logger], *, resume: bool = False) -> None:
        self.loggers = loggers
        self._resume = resume  # until the first record: where the resumed run continues
        self._closed = False

    def log(self, record: Mapping[str, Any], step: int) -> None:
        """Log the numeric entries of ``record`` (not ``epoch``) at ``step``, the epoch number.

        Non-finite values are logged as they are. The CSV file and TensorBoard's event file are
        flushed before this returns, so a crash loses no logged epoch there.
        """
        if self._closed:
            raise RuntimeError("these loggers are closed")
        metrics = _metrics(record)
        if self._resume:
            self._resume = False
            for logger in self.loggers:
                if isinstance(logger, Resumable):
                    logger.continue_at(step)
        if not metrics:
            return
        for logger in self.loggers:
            logger.log_metrics(metrics, step)
            logger.save()

    def close(self, status: str = "success") -> None:
        """Finalize every logger with ``status``: ``"success"``, or ``"failed"`` when training stopped
        with an error (MLflow marks the run FAILED). Every logger is finalized even if one raises;
        the first error is raised after. A second call does nothing."""
        if status not in ("success", "failed"):
            raise ValueError(f"status must be 'success' or 'failed', got {status!r}")
        if self._closed:
            return
        self._closed = True
        errors = []
        for logger in self.loggers:
            try:
                logger.finalize(status)
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> RunLoggers:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close("success")
            return
        try:
            self.close("failed")
        except Exception as e:  # the training error in flight is the one to report
            warnings.warn(f"closing the experiment loggers failed: {e}", stacklevel=2)


def open_loggers(
    names: tuple[str, ...], run_dir: Path, config: RunConfig, *, resume: bool = False
) -> RunLoggers:
    """The CSV log and the loggers ``names`` of the run in ``run_dir``, with ``config`` logged.

    ``resume=True`` continues the logs a previous attempt left in ``run_dir``; without it every log
    starts anew (the CSV file is replaced, TensorBoard's earlier events are hidden, W&B and MLflow
    start a new run). If a logger fails to open, those already open are closed as ``"failed"``.
    """
    names = _names(names)
    check_loggers(names)
    run_dir = Path(run_dir)
    title = run_dir.resolve().name or "pyro-vae"
    params = hyperparameters(config)
    opened: list[Logger] = []
    try:
        for name in (CSV, *names):
            # a received run directory may hold links: a logger's folder must be its own
            home = run_path(run_dir, LOGS, name)
            # a logger that continues its record keeps the hyperparameters it was first given
            continues = resume and home.is_dir() and any(home.iterdir())
            factory = csv_logger if name == CSV else LOGGERS.get(name)
            logger = factory(run_dir, title, resume=resume)
            opened.append(logger)
            if name == CSV or not continues:
                logger.log_hyperparams(params)
    except BaseException:
        for logger in opened:
            with contextlib.suppress(Exception):
                logger.finalize("failed")
        raise
    return RunLoggers(opened, resume=resume)


def csv_logger(run_dir: Path, name: str = "", *, resume: bool = False) -> CSVLog:
    """The CSV log: ``<run_dir>/logs/csv/metrics.csv`` and ``hparams.yaml``, flushed every step.

    ``resume=True`` appends to an existing ``metrics.csv`` (its header kept, widened if a new metric
    appears); without it an existing file is replaced. ``name`` is unused (the directory is fixed).
    """
    return CSVLog(Path(run_dir) / LOGS, resume=resume)


class CSVLog(Resumable):
    """The always-on CSV log, in the layout of Lightning's ``CSVLogger`` (a ``step`` column, one
    column per metric; ``hparams.yaml``), with its logger interface.

    Written with the ``csv`` module rather than by Lightning's logger: importing Lightning slows
    every later training step of the process by about 5% on the CPU (a larger heap for the garbage
    collector among other things; benchmarks/RESULTS.md), and a run on one device must pay nothing
    for scale-out. The other loggers are Lightning's, imported only when asked for.
    """

    def __init__(self, root_dir: Path, *, resume: bool = False) -> None:
        self.metrics_file_path = run_path(Path(root_dir), CSV, "metrics.csv")
        self.log_dir = self.metrics_file_path.parent
        self.metrics_keys: list[str] = []
        if resume and self.metrics_file_path.is_file():
            self.metrics_keys = self._header()  # appends keep this header
        elif self.metrics_file_path.exists():
            self.metrics_file_path.unlink()  # a new run's log replaces an old attempt's

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        import yaml

        from .safety import atomic_write_text

        text = yaml.safe_dump(dict(params), sort_keys=True, default_flow_style=False)
        atomic_write_text(self.log_dir / "hparams.yaml", text)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        row = {"step": step, **metrics}
        new = [k for k in row if k not in self.metrics_keys]
        if new or not self.metrics_file_path.is_file():
            self.metrics_keys += new  # a new column: the file is rewritten with the wider header
            self._rewrite([*self._rows(), row])
            return
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self.metrics_keys).writerow(row)
        append_text(self.metrics_file_path, text.getvalue())

    def continue_at(self, step: int) -> None:
        """Remove the rows at ``step`` and after (epochs a resumed run repeats)."""
        rows = self._rows()
        kept = [row for row in rows if _step(row.get("step") or "") < step]
        if len(kept) != len(rows):
            self._rewrite(kept)

    def save(self) -> None:
        """Every row is written when it is logged."""

    def finalize(self, status: str) -> None:
        """Nothing stays open between rows."""

    def _header(self) -> list[str]:
        rows = list(csv.reader(io.StringIO(self._text())))
        header = rows[0] if rows else []
        if rows and (not header or header[0] != "step" or any(not k for k in header)):
            raise self._damaged("its first line is not a header starting with 'step'")
        return header

    def _text(self) -> str:
        from .errors import CheckpointError

        return read_text(self.metrics_file_path, "CSV log", CheckpointError)

    def _damaged(self, what: str) -> Exception:
        from .errors import CheckpointError

        return CheckpointError(
            f"the CSV log {self.metrics_file_path} is damaged ({what}); delete it to resume "
            "without the old log"
        )

    def _rows(self) -> list[dict[str, str]]:
        if not self.metrics_file_path.is_file():
            return []
        try:
            rows = list(csv.DictReader(io.StringIO(self._text(), newline="")))
        except csv.Error as e:
            raise self._damaged(str(e)) from None
        if any(None in row for row in rows):  # more cells than the header has names
            raise self._damaged("a row has more cells than the header")
        return rows

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        from .safety import atomic_write_text

        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.metrics_keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, text.getvalue())


@LOGGERS.register("tensorboard")
def tensorboard_logger(run_dir: Path, name: str = "", *, resume: bool = False) -> Logger:
    """TensorBoard: event files in ``<run_dir>/logs/tensorboard/``; the hyperparameters appear in the
    HParams dashboard beside the final ``test_elbo`` and ``train_elbo``. ``name`` is unused."""
    home = Path(run_dir) / LOGS / "tensorboard"
    stale = home.is_dir() and any(home.glob("events.out.tfevents.*"))
    # a new run over the event files of an attempt that never checkpointed hides them (purge from
    # step 0) rather than deleting them; a resumed one purges from its first epoch (continue_at)
    return _tensorboard_class()(Path(run_dir) / LOGS, 0 if stale and not resume else None)


@LOGGERS.register("wandb")
def wandb_logger(run_dir: Path, name: str, *, resume: bool = False) -> Logger:
    """Weights & Biases: project ``$WANDB_PROJECT`` (default ``pyro-vae``), run ``name``, files in
    ``<run_dir>/logs/wandb/``.

    Needs ``wandb login`` (or ``$WANDB_API_KEY``), or ``WANDB_MODE=offline`` and a later ``wandb sync``.
    The run id is kept in ``logs/wandb/run_id`` so that ``resume=True`` continues the same W&B run.
    """
    home = Path(run_dir) / LOGS / "wandb"
    run_id = _run_id(home, resume) or _write_run_id(home, _new_wandb_id())
    return _wandb_class()(
        name=name,
        save_dir=str(home),
        project=os.environ.get("WANDB_PROJECT", "pyro-vae"),
        id=run_id,
    )


@LOGGERS.register("mlflow")
def mlflow_logger(run_dir: Path, name: str, *, resume: bool = False) -> Logger:
    """MLflow: experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``pyro-vae``), run ``name``.

    The store is ``$MLFLOW_TRACKING_URI`` if set, else a SQLite database in the run directory,
    ``<run_dir>/logs/mlflow/mlflow.db`` with artifacts in ``logs/mlflow/artifacts/`` (MLflow 3 refuses
    its old ``file:`` store without ``MLFLOW_ALLOW_FILE_STORE``). The run id is kept in
    ``logs/mlflow/run_id`` so that ``resume=True`` continues the same MLflow run.
    """
    from lightning.pytorch.loggers import MLFlowLogger

    home = Path(run_dir).resolve() / LOGS / "mlflow"
    home.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    logger = MLFlowLogger(
        experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME", "pyro-vae"),
        run_name=name,
        tracking_uri=uri or f"sqlite:///{home / 'mlflow.db'}",
        artifact_location=None if uri else (home / "artifacts").as_uri(),
        run_id=_run_id(home, resume),
    )
    # creates the run (or finds the one resumed) now, so that a bad store fails at the start
    _write_run_id(home, logger.run_id)
    return logger


def _run_id(home: Path, resume: bool) -> str | None:
    path = home / RUN_ID
    if resume and path.is_file():
        from .errors import CheckpointError

        text = read_text(path, "logger run id", CheckpointError).strip()
        if text and not all(c.isalnum() or c in "-_" for c in text):
            raise CheckpointError(
                f"{path} does not hold a run id; delete it to start a new logger run"
            )
        return text or None
    return None


def _write_run_id(home: Path, run_id: str) -> str:
    from .safety import atomic_write_text

    atomic_write_text(home / RUN_ID, f"{run_id}\n")
    return run_id


def _new_wandb_id() -> str:
    # W&B's own ids are 8 characters of [a-z0-9]
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _step(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.inf  # a row that cannot be read as a step is not kept by a resume


# The classes below subclass Lightning's, so they are built on first use (Lightning is slow to import,
# and slows the training steps of a process that imports it: see CSVLog).


@functools.cache
def _tensorboard_class() -> type[Logger]:
    from lightning.fabric.loggers import TensorBoardLogger
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    class PyroVAETensorBoardLogger(TensorBoardLogger, Resumable):
        """Lightning Fabric's TensorBoard logger in ``<logs>/tensorboard/`` (no version directory),
        with the hyperparameters written for the HParams dashboard (Lightning's writes them only
        together with an ``hp_metric`` scalar) and a purge step for resumed runs."""

        def __init__(self, root_dir: Path, purge_step: int | None) -> None:
            super().__init__(
                root_dir,
                name="tensorboard",
                version="",
                default_hp_metric=False,
                purge_step=purge_step,
            )

        @rank_zero_only
        def log_hyperparams(self, params: Any, metrics: Any = None, step: Any = None) -> None:
            if _TENSORBOARD_AVAILABLE:
                from torch.utils.tensorboard.summary import hparams
            else:
                from tensorboardX.summary import hparams

            # hparams() reads only the metric names: the values are the scalars logged each epoch
            summaries = hparams(dict(params), dict.fromkeys(_HPARAM_METRICS, 0.0))
            writer = self.experiment._get_file_writer()
            for summary in summaries:
                writer.add_summary(summary, step)

        @rank_zero_only
        def continue_at(self, step: int) -> None:
            # the SummaryWriter is made on first use, and a purge_step makes TensorBoard hide the
            # events at that step and after that earlier files hold
            if self._experiment is None:
                self._kwargs["purge_step"] = step

    return PyroVAETensorBoardLogger


@functools.cache
def _wandb_class() -> type[Logger]:
    from lightning.pytorch.loggers import WandbLogger
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    class PyroVAEWandbLogger(WandbLogger):
        """Lightning's W&B logger, which leaves the run open after ``finalize`` (a later logger in
        the same process would reuse it), made to finish it with the run's exit status."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            init = getattr(self, "_wandb_init", None)
            if isinstance(init, dict) and init.get("anonymous") is None:
                init.pop("anonymous", None)  # W&B warns that the setting has no effect

        @rank_zero_only
        def finalize(self, status: str) -> None:
            super().finalize(status)
            if self._experiment is not None:
                self._experiment.finish(exit_code=0 if status == "success" else 1)
                self._experiment = None

    return PyroVAEWandbLogger


__all__ = [
    "LOGGERS",
    "RunLoggers",
    "check_loggers",
    "csv_logger",
    "hyperparameters",
    "open_loggers",
]
