"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``, ``reconstruct``, ``interpolate``, ``plot``.

Every training option is generated from one field of :class:`~pyro_vae.config.RunConfig` (its help,
flag and metavar live in the field's metadata), so a field added there is parsed, documented, saved
with the run and checked on ``--resume`` in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
import traceback
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, PyroVAEError
from .registry import Registry
from .safety import run_folder, run_path

if typing.TYPE_CHECKING:
    from .config import RunConfig


def registry(kind: str) -> Registry:
    """The registry behind a field's ``choices``."""
    from . import data, guides, likelihoods, loggers, models, nn, objectives, priors

    return {
        "guide": guides.GUIDES,
        "prior": priors.PRIORS,
        "objective": objectives.OBJECTIVES,
        "likelihood": likelihoods.LIKELIHOODS,
        "network": nn.NETWORKS,
        "model": models.MODELS,
        "dataset": data.DATASETS,
        "logger": loggers.LOGGERS,
    }[kind]


def _key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(key, "value")``; the value is typed later, from the option's target."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{key!r} in {text!r} is not an option name")
    return key, value.strip()


@dataclass(frozen=True)
class Option:
    """One command-line flag and the config field it sets (``section.field``, ``section.dict[]`` for
    KEY=VALUE pairs, ``section.dict[key]`` for one key)."""

    flags: tuple[str, ...]
    target: str
    help: str
    metavar: str | None = None
    nargs: str | None = None
    type: Any = str


def _default_text(f: dataclasses.Field, meta: Mapping[str, Any]) -> str:
    if meta.get("default_help") is not None:
        return meta["default_help"]
    if f.default is dataclasses.MISSING or f.default is None:
        return ""
    value = f.default
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def options() -> list[Option]:
    """``pyro-vae train``'s options, generated from the fields of :class:`~pyro_vae.config.RunConfig`.

    Values stay strings here: :func:`pyro_vae.build.validate` types them from the field annotations (and
    part options from the part's signature), so a value is parsed in one place whatever its source.
    """
    from .config import SECTIONS

    out = []
    for section, kind in SECTIONS.items():
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            meta = f.metadata
            flags = tuple(meta.get("flags") or ()) or ("--" + f.name.replace("_", "-"),)
            target = f"{section}.{f.name}"
            text = meta.get("help", "")
            if meta.get("choices"):
                text += f"; one of: {', '.join(registry(meta['choices']).names())}"
            if typing.get_origin(hints[f.name]) is dict:
                out.append(Option(flags, target + "[]", text, "KEY=VALUE", "+", _key_value))
                for flag, key, metavar, alias_help in meta.get("aliases", ()):
                    out.append(Option((flag,), f"{target}[{key}]", alias_help, metavar))
                continue
            default = _default_text(f, meta)
            if default:
                text += f" (default: {default})"
            metavar = meta.get("metavar") or "N"
            tp = hints[f.name]
            if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            nargs = "+" if typing.get_origin(tp) is tuple else None
            out.append(Option(flags, target, text, metavar, nargs))
    return out


def _apply(config: Any, overrides: dict[str, Any]) -> Any:
    """Return ``config`` with ``{"section.field": value}`` and ``{"section.dict[]": [(k, v)]}`` applied."""
    from .config import RunConfig

    sections = {s: getattr(config, s) for s in ("data", "model", "train")}
    for target, value in overrides.items():
        section, name = target.split(".", 1)
        if name.endswith("]"):  # "dict[]": a list of (key, value) pairs; "dict[key]": one value
            name, key = name[:-1].split("[", 1)
            merged = dict(getattr(sections[section], name))
            merged.update(dict(value) if key == "" else {key: value})
            value = merged
        elif isinstance(value, list):
            value = tuple(value)
        sections[section] = replace(sections[section], **{name: value})
    return RunConfig(**sections)


def _add_train_options(p: argparse.ArgumentParser) -> None:
    groups = {
        s: p.add_argument_group(f"{s} options ({title})")
        for s, title in (
            ("data", "what to train on"),
            ("model", "the model and its parts"),
            ("train", "how to train"),
        )
    }
    for opt in options():
        # default=SUPPRESS: only options the user typed reach the config, so --resume can tell
        # "not given" (use the run's value) from "given" (must match the run's value)
        groups[opt.target.split(".", 1)[0]].add_argument(
            *opt.flags,
            dest=opt.target,
            type=opt.type,
            nargs=opt.nargs,
            metavar=opt.metavar,
            help=opt.help.replace("%", "%%"),  # argparse %-formats help strings
            default=argparse.SUPPRESS,
        )
    run = p.add_argument_group("run options")
    run.add_argument(
        "--run-dir",
        type=Path,
        metavar="DIR",
        help="where the run is written (default: runs/DATASET-MODEL-TIME)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="start from this config.json; options given here override it",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_import(p)
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")


def _add_import(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so that the guides, priors, objectives, models or data sets it "
        "registers can be named (repeatable; installed plugins load by themselves)",
    )


class UsageError(PyroVAEError):
    """A command line argparse cannot parse."""


class Parser(argparse.ArgumentParser):
    """argparse, but a parse error is one line (``pyro-vae: error: ...``), like every other error,
    instead of the usage block and an exit from inside the parser."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs, trained with SVI.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model; writes config.json, checkpoint.pt, metrics.jsonl and "
        "figures/ into the run directory. Every option's default is shown; an option that the "
        "chosen model or data set does not use is refused.",
    )
    _add_train_options(p)
    _add_common(p)

    def run_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        q.add_argument("run", type=Path, help="run directory written by `pyro-vae train`")
        q.add_argument("--device", default="cpu", help="device to load the model on")
        q.add_argument(
            "--data-dir",
            default=None,
            help="where the run's torchvision data set lives here (default: the run's own)",
        )
        _add_common(q)
        return q

    q = run_parser("evaluate", "score a trained run on its test set")
    q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    q.add_argument(
        "--particles", type=int, default=1, help="samples per data point for the test ELBO"
    )
    q.add_argument(
        "--nll-samples",
        type=int,
        default=5000,
        help="importance samples per test point for log p(x) and the NLL (0: skip; slow on a CPU "
        "for big test sets, see --limit)",
    )
    q.add_argument(
        "--iwae-samples", type=int, default=50, help="samples for the IWAE-k bound (0: skip)"
    )
    q.add_argument("--limit", type=int, default=None, help="evaluate only the first N test points")
    q.add_argument(
        "--no-probe",
        dest="probe",
        action="store_false",
        help="skip the linear probe (logistic regression on the latent means with 100, 1000 and "
        "all training labels)",
    )

    q = run_parser("sample", "draw samples from the prior and decode them")
    q.add_argument("-n", type=int, default=64, help="number of samples")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/samples.png)"
    )

    q = run_parser("reconstruct", "show test images beside their reconstructions")
    q.add_argument("-n", type=int, default=16, help="number of test images")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/reconstructions.png)"
    )

    q = run_parser("interpolate", "decode straight lines in latent space between test images")
    q.add_argument("--steps", type=int, default=10, help="images per line")
    q.add_argument("--pairs", type=int, default=4, help="number of pairs of test images")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/interpolation.png)"
    )

    q = run_parser("plot", "re-draw every figure of a run")
    q.add_argument(
        "--projection",
        choices=["pca", "tsne"],
        default="pca",
        help="2-D projection for the latent map",
    )

    def add_data(q: argparse.ArgumentParser, flag: str = "--data", what: str = "data") -> None:
        against = flag == "--against"
        q.add_argument(
            flag,
            metavar="NAME",
            default=None,
            nargs="?" if against else None,
            const=RUN_DATA if against else None,
            help=f"the {what}: a registered data set or a .npz/.npy path, prepared as the run's "
            "data (binarization); "
            + ("without NAME the run's own data set" if against else "default: the run's own"),
        )
        q.add_argument(
            f"{flag}-split",
            choices=["test", "train"],
            default="test",
            help=f"which split of the {what}",
        )

    q = run_parser(
        "score",
        "score every example: ELBO, log p(x), rate, reconstruction, complexity-corrected "
        "likelihood, likelihood regret, typicality; with --against, detection metrics",
    )
    add_data(q)
    add_data(q, "--against", "in-distribution reference (e.g. the run's own test set)")
    q.add_argument(
        "--out", type=Path, default=None, help="table (.csv or .npz); default RUN/scores/"
    )
    q.add_argument("--limit", type=int, default=None, help="score only the first N examples")
    q.add_argument("--nll-samples", type=int, default=1000, help="importance samples for log p(x)")
    q.add_argument("--regret-steps", type=int, default=50, help="steps of likelihood regret")
    q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    q.add_argument(
        "--typicality-points",
        type=int,
        default=500,
        help="training images whose mean -log p(x) is typicality's reference (0: no typicality)",
    )

    q = run_parser("encode", "write the latent means and scales of q(z|x) for a data set")
    add_data(q)
    q.add_argument("--out", type=Path, required=True, help="output file (.npz)")

    q = run_parser(
        "traverse", "latent traversals: each dimension swept across the prior's quantiles"
    )
    q.add_argument("--image", type=int, default=0, help="index of the test image to traverse")
    q.add_argument("--steps", type=int, default=9, help="columns: quantiles per dimension")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/traversal.png)"
    )
    return parser


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The validated configuration ``pyro-vae train`` runs with: the defaults, a ``--config`` file or
    (with ``--resume``) the run's own configuration, then the options typed on the command line."""
    from .checkpoint import load_checkpoint
    from .config import RunConfig

    overrides = {o.target: getattr(args, o.target) for o in options() if hasattr(args, o.target)}
    if args.resume:
        if args.run_dir is None:
            raise ConfigError("--resume needs --run-dir, the run to continue")
        if args.config is not None:
            raise ConfigError("--resume continues a run with its own configuration; drop --config")
        base = load_checkpoint(args.run_dir)["config"]
    elif args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"no config file at {args.config}")
        try:
            text = args.config.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read {args.config}: {e}") from None
        base = RunConfig.from_json(text)
    else:
        base = RunConfig()
    from .build import validate

    return validate(_apply(base, overrides))


def train_config(argv: Sequence[str]) -> RunConfig:
    """The configuration ``pyro-vae train ARGV`` would train with (for scripts and tests)."""
    return config_from_args(build_parser().parse_args(["train", *argv]))


_DEFAULT_RUN_DIR = "PYRO_VAE_DEFAULT_RUN_DIR"


def cmd_train(args: argparse.Namespace) -> int:
    from . import plots
    from .checkpoint import CONFIG
    from .train import train

    config = config_from_args(args)
    # the processes a data-parallel run starts re-run this command: they inherit the launching
    # process's environment, so a default run directory is named once, there
    run_dir = Path(
        args.run_dir
        or os.environ.get(_DEFAULT_RUN_DIR)
        or Path("runs")
        / f"{Path(config.data.dataset).stem}-{config.model.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if not args.run_dir and config.train.devices * config.train.num_nodes > 1:
        os.environ.setdefault(_DEFAULT_RUN_DIR, str(run_dir))
    result = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    if result.rank != 0:  # rank 0 draws and reports
        return 0
    if not args.no_plots:
        plots.draw_all(result.model, result.dataset, result.history, run_dir)
    last = result.history[-1] if result.history else {}
    # models that select an epoch (M2, by validation accuracy) keep that epoch's weights: report it
    if last.get("best_epoch"):
        last = next(r for r in result.history if r["epoch"] == last["best_epoch"])
    summary = ", ".join(
        f"{k} {v:.3f}"
        for k, v in last.items()
        if k.startswith(("test", "train")) and isinstance(v, float)
    )
    print(f"run written to {run_dir} ({CONFIG}, checkpoint.pt, metrics.jsonl, figures/)")
    if summary:
        chosen = " (selected by validation)" if "best_epoch" in last else ""
        print(f"epoch {last['epoch']}{chosen}: {summary}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import report
    from .train import load_run

    _positive("--particles", args.particles)
    if args.limit is not None:
        _positive("--limit", args.limit)
    for name, value in (("--nll-samples", args.nll_samples), ("--iwae-samples", args.iwae_samples)):
        if value < 0:
            raise ConfigError(f"{name} must be 0 (skip) or positive, got {value}")
    config, model, data = load_run(args.run, args.device, data_dir=args.data_dir)
    x = data.test if args.limit is None else data.test[: args.limit]
    labels = (
        data.test_labels
        if args.limit is None or data.test_labels is None
        else data.test_labels[: args.limit]
    )
    result = {"run": str(args.run), "test_points": int(x.shape[0])}
    result.update(
        report(
            model,
            x,
            labels,
            particles=args.particles,
            nll_samples=args.nll_samples,
            iwae_samples=args.iwae_samples,
            # the linear probe on the latent means: logistic regression with 100, 1000 and all
            # training labels, scored on the test set (when the data have labels)
            train_x=data.train if args.probe else None,
            train_labels=data.train_labels if args.probe else None,
        )
    )
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            if isinstance(v, list):  # e.g. the KL of each latent dimension
                v = " ".join(f"{u:.2f}" if isinstance(u, float) else str(u) for u in v)
            print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from . import plots
    from .train import load_run

    if args.out is not None:
        _check_figure_path(args.out)
    _, model, data = load_run(args.run, args.device, data_dir=args.data_dir)
    figs = run_folder(args.run, plots.FIGURES)  # no link in a received run followed
    if args.command == "sample":
        _positive("-n", args.n)
        path = plots.samples(model, args.out or figs / "samples.png", n=args.n)
    elif args.command == "reconstruct":
        _positive("-n", args.n)
        path = plots.reconstructions(
            model, data.test, args.out or figs / "reconstructions.png", n=args.n
        )
    else:
        _positive("--steps", args.steps)
        _positive("--pairs", args.pairs)
        path = plots.interpolation(
            model, data.test, args.out or figs / "interpolation.png", args.steps, args.pairs
        )
    if path is None:
        raise ConfigError("this data set is not image-shaped, so there is no image to draw")
    print(path)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots
    from .train import _read_metrics, load_run

    _, model, data = load_run(args.run, args.device, data_dir=args.data_dir)
    history = _read_metrics(Path(args.run) / "metrics.jsonl")
    for path in plots.draw_all(model, data, history, args.run, projection=args.projection):
        print(path)
    return 0


#: ``--against`` without a name: the run's own data set
RUN_DATA = ":run:"


def _split_of(config: Any, data: Any, name: str | None, split: str, data_dir: str | None) -> Any:
    """(x, labels) of a split of the run's data set ``data``, or of another data set prepared as
    the run's (same binarization)."""
    from .data import dataset_source, load_dataset

    if name is not None:  # (--data-dir for the run's own data set was given to load_run)
        reads = "data_dir" in dataset_source(name).options
        if data_dir is not None and not reads:
            raise ConfigError(
                f"--data-dir is not used by --data {name}; it is where torchvision data sets "
                "(mnist, fashion-mnist) live"
            )
        chosen = (data_dir if data_dir is not None else config.data.data_dir) if reads else None
        data = load_dataset(replace(config.data, dataset=name, data_dir=chosen))
    if split == "train":
        return data.train, data.train_labels
    return data.test, data.test_labels


def cmd_score(args: argparse.Namespace) -> int:
    from . import scores
    from .train import load_run

    _positive("--nll-samples", args.nll_samples)
    if args.regret_steps < 0:
        raise ConfigError(
            f"--regret-steps must be 0 (no regret) or positive, got {args.regret_steps}"
        )
    if args.limit is not None:
        _positive("--limit", args.limit)
    if args.typicality_points < 0:
        raise ConfigError(
            f"--typicality-points must be 0 or positive, got {args.typicality_points}"
        )
    if args.out is not None and args.out.suffix not in (".csv", ".npz"):
        raise ConfigError(f"--out {args.out}: the table is written as .csv or .npz")
    # --data-dir: where the data set scored lives (the run's own, without --data)
    own_dir = args.data_dir if args.data is None else None
    config, model, data = load_run(args.run, args.device, data_dir=own_dir)
    device = data.train.device

    def prepared(name: str | None, split: str) -> Any:
        x, _ = _split_of(config, data, name, split, args.data_dir)
        return (x if args.limit is None else x[: args.limit]).to(device)

    reference = None
    if args.typicality_points:
        ref_x = data.train[: args.typicality_points]
        reference = scores.score(model, ref_x, num_samples=args.nll_samples, scores=("log_px",))[
            "log_px"
        ]
    options = dict(
        num_samples=args.nll_samples, regret_steps=args.regret_steps, reference_log_px=reference
    )
    names = [s for s in scores.SCORES if reference is not None or s != "typicality"]
    x = prepared(args.data, args.data_split)
    table = scores.score(model, x, scores=tuple(names), **options)
    label = f"{args.data or Path(config.data.dataset).stem}-{args.data_split}"
    out = args.out or run_path(args.run, "scores", f"{Path(label).name}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.write_table(table, out)
    result: dict[str, Any] = {
        "run": str(args.run),
        "data": label,
        "examples": int(x.shape[0]),
        "table": str(out),
        "mean": {k: float(v.mean()) for k, v in table.items()},
    }
    if args.against is not None:
        ref = prepared(None if args.against == RUN_DATA else args.against, args.against_split)
        ref_table = scores.score(model, ref, scores=tuple(names), **options)
        ref_name = Path(config.data.dataset).stem if args.against == RUN_DATA else args.against
        result["against"] = f"{ref_name}-{args.against_split}"
        result["detection"] = scores.detection_metrics(ref_table, table)
        figs = out.parent
        result["figures"] = [
            str(scores.roc_figure(ref_table, table, figs / f"{out.stem}-roc.png")),
            str(scores.histogram_figure(ref_table, table, figs / f"{out.stem}-histograms.png")),
        ]
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['examples']} examples of {label} scored; table: {out}")
    detect = result.get("detection", {})
    head = f"{'score':<12} {'mean':>10}"
    if detect:
        head += f" {'AUROC':>7} {'AUPRC':>7} {'FPR@95':>7}   ({label} against {result['against']})"
    print(head)
    for name, mean in result["mean"].items():
        line = f"{name:<12} {mean:10.3f}"
        if name in detect:
            m = detect[name]
            line += f" {m['auroc']:7.3f} {m['auprc']:7.3f} {m['fpr_at_95_tpr']:7.3f}"
        print(line)
    for path in result.get("figures", []):
        print(path)
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from .represent import encode, write_encoding
    from .train import load_run

    if args.out.suffix != ".npz":
        raise ConfigError(f"--out {args.out}: the encoding is written as .npz")
    own_dir = args.data_dir if args.data is None else None
    config, model, data = load_run(args.run, args.device, data_dir=own_dir)
    x, labels = _split_of(config, data, args.data, args.data_split, args.data_dir)
    device = data.train.device
    enc = encode(model, x.to(device), None if labels is None else labels.to(device))
    write_encoding(enc, args.out)
    print(args.out)
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    from . import plots
    from .train import load_run

    _positive("--steps", args.steps)
    if args.out is not None:
        _check_figure_path(args.out)
    _, model, data = load_run(args.run, args.device, data_dir=args.data_dir)
    if not 0 <= args.image < data.test.shape[0]:
        raise ConfigError(f"--image must lie in 0..{data.test.shape[0] - 1}, got {args.image}")
    out = args.out or run_path(args.run, plots.FIGURES, "traversal.png")
    path = plots.traversal(model, data.test, out, image=args.image, steps=args.steps)
    if path is None:
        raise ConfigError("this data set is not image-shaped, so there is no image to draw")
    print(path)
    return 0


COMMANDS = {
    "score": cmd_score,
    "encode": cmd_encode,
    "traverse": cmd_traverse,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_figure,
    "reconstruct": cmd_figure,
    "interpolate": cmd_figure,
    "plot": cmd_plot,
}


def _preimport(argv: Sequence[str]) -> None:
    """Import ``--import MODULE`` plugins before the parser is built, so that their names are
    listed in ``--help`` and accepted."""
    from .plugins import import_plugin, load_entry_points

    load_entry_points()
    for i, arg in enumerate(argv):
        if arg == "--import" and i + 1 < len(argv):
            import_plugin(argv[i + 1])
        elif arg.startswith("--import="):
            import_plugin(arg.split("=", 1)[1])


FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def _check_figure_path(out: Path) -> None:
    if out.is_dir():
        raise ConfigError(
            f"--out {out} is a directory; give a file name, e.g. {out / 'figure.png'}"
        )
    if out.suffix.lower() not in FIGURE_SUFFIXES:
        raise ConfigError(
            f"--out {out}: a figure is written as {', '.join(FIGURE_SUFFIXES)}; use one of those "
            "suffixes"
        )
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {out.parent} does not exist")


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into the same clean stop as Ctrl-C (the last checkpoint is kept)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    if _mid_fork(frame):
        # an exception raised while worker processes are being forked or shut down is swallowed
        # by Python's at-fork hooks (which then leave the logging module's lock held, and the next
        # fork hangs) or leaves a half-made DataLoader iterator that prints a traceback: the stop
        # is delivered again a moment later, outside them
        threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
        return
    raise Terminated


#: (file, function) where a stop must wait: Python's at-fork hooks and a DataLoader starting or
#: ending its worker processes
_NOT_NOW = (
    (os.path.join("logging", "__init__.py"), None),
    (
        os.path.join("torch", "utils", "data", "dataloader.py"),
        ("__init__", "_reset", "_shutdown_workers"),
    ),
)


def _mid_fork(frame: Any) -> bool:
    while frame is not None:
        code = frame.f_code
        for file, functions in _NOT_NOW:
            if code.co_filename.endswith(file) and (functions is None or code.co_name in functions):
                return True
        frame = frame.f_back
    return False


def _program() -> str:
    """``pyro-vae``, or ``pyro-vae (rank N)`` in a process of a data-parallel run other than rank 0,
    so that the error lines every process prints can be told apart."""
    rank = os.environ.get("RANK") or os.environ.get("LOCAL_RANK")
    return f"pyro-vae (rank {rank})" if rank and rank != "0" else "pyro-vae"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pyro-vae`` program: every failure ends in one line on stderr, never a traceback
    (``--debug`` shows it). Exit status 2: bad input; 1: an internal error (a bug to report);
    130/143: interrupted by Ctrl-C / SIGTERM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings():
        if "--debug" not in argv:  # pyro-vae's own checks report a NaN in one line, not per site
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
        return _main(argv)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        _preimport(argv)
    except PyroVAEError as e:
        if debug and e.__cause__ is not None:  # a plugin's own error: its traceback
            traceback.print_exception(e.__cause__)
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return COMMANDS[args.command](args)
    except PyroVAEError as e:
        if debug and e.__cause__ is not None:  # e.g. the user's part that failed: its traceback
            traceback.print_exception(e.__cause__)
        print(f"{_program()}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        hint = ""
        if getattr(args, "command", None) == "train" and getattr(args, "run_dir", None):
            hint = f"; continue with: pyro-vae train --run-dir {args.run_dir} --resume"
        what = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"pyro-vae: {what}{hint}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except OSError as e:
        if debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"pyro-vae: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:
        if debug:
            raise
        from .usercode import blame

        theirs = blame(e)  # raised in the user's code, or in a run of their parts
        if theirs is not None:
            print(f"{_program()}: error: {theirs}", file=sys.stderr)
            return 2
        first = str(e).strip().split("\n", 1)[0][:300]
        print(
            f"pyro-vae: internal error: {type(e).__name__}: {first}. This is a bug; please report "
            "it with the command (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
