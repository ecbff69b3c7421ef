"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``, ``reconstruct``, ``interpolate``, ``plot``.

Every training option is generated from one field of :class:`~pyro_vae.config.RunConfig` (its help,
flag and metavar live in the field's metadata), so a field added there is parsed, documented, saved
with the run and checked on ``--resume`` in one place.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Mapping, Sequence
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
    #: "extend" for KEY=VALUE pairs, so a repeated flag adds its pairs rather than replacing them
    action: str | None = None


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
                out.append(
                    Option(flags, target + "[]", text, "KEY=VALUE", "+", _key_value, "extend")
                )
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
            if key == "":
                keys = [k for k, _ in value]
                twice = sorted({k for k in keys if keys.count(k) > 1})
                if twice:
                    what = name.removesuffix("_options").replace("_", " ")
                    raise UsageError(
                        f"the {what} option {', '.join(twice)} is given more than once; give it once"
                    )
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
            **({"action": opt.action} if opt.action else {}),
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
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar, one line per epoch instead, even on a terminal (--quiet: nothing)",
    )
    run.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    run.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="start from this config.json; options given here override it",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_import(p)
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress output: no bar on a terminal, no progress lines elsewhere",
    )
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


class DefaultsHelp(argparse.HelpFormatter):
    """Help that names an option's default where it says something: not for switches (their help
    says what they do), empty or unset values, or help that names its default itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or not action.option_strings
            or action.nargs == 0  # --json, --no-figures: a switch
            or default in (None, argparse.SUPPRESS)
            or default == []
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else "%(default)s"
        return f"{text} (default: {shown})"


class UsageError(PyroVAEError):
    """A command line argparse cannot parse."""


class Parser(argparse.ArgumentParser):
    """argparse, but a parse error is one line (``pyro-vae: error: ...``), like every other error,
    instead of the usage block and an exit from inside the parser."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_data(q: argparse.ArgumentParser, flag: str = "--data", what: str = "data") -> None:
    against = flag == "--against"
    q.add_argument(
        flag,
        metavar="NAME",
        default=None,
        nargs="?" if against else None,
        const=RUN_DATA if against else None,
        help=f"the {what}: a registered data set or a .npz/.npy path, prepared as the run's "
        "data (binarization); "
        + (
            "without NAME the run's own data set"
            if against
            else "default: the run's own (which must then still be where it was trained)"
        ),
    )
    q.add_argument(
        f"{flag}-split",
        choices=["test", "train"],
        default=None,
        help=f"which split of the {what}. Default: every row of a file that has no split of its "
        "own (a .npz with x, a .npy file, a folder: pyro-vae would otherwise split it 80/20 "
        "itself), else the test split; --data-split test/train picks one of pyro-vae's splits "
        "even there",
    )


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

    p = sub.add_parser(
        "semi-supervised",
        help="compare semi-supervised models over label budgets and labelled subsets",
        description="Train every (model, label budget, labelled subset) run into OUT/runs/, then "
        "write OUT/results.csv (one row per run, labels used counted) and OUT/accuracy.png. "
        "Rerun the same command to continue after a stop; --shard I/N splits the runs between "
        "processes. The train options apply to every run (model-specific ones to the models "
        "that take them).",
    )
    _add_train_options(p)
    e = p.add_argument_group("experiment options")
    e.add_argument("--out", type=Path, required=True, metavar="DIR", help="the experiment's folder")
    e.add_argument("--models", nargs="+", default=["m2"], metavar="NAME", help="default: m2")
    e.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        default=[],
        metavar="N",
        help="label budgets (class-balanced subsets); omit for data with -1 labels (own split)",
    )
    e.add_argument(
        "--subsets", type=int, default=3, metavar="N", help="labelled subsets (seeds 0..N-1)"
    )
    e.add_argument(
        "--train-subset",
        type=int,
        default=0,
        metavar="N",
        help="train on a fixed random N images (0: all)",
    )
    e.add_argument("--shard", default="0/1", metavar="I/N", help="train every N-th run from I")
    _add_common(p)

    def run_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=DefaultsHelp,
        )
        q.add_argument("run", type=Path, help="run directory written by `pyro-vae train`")
        q.add_argument("--device", default="cpu", help="device to load the model on")
        _add_common(q)
        return q

    q = run_parser("evaluate", "score a trained run on its test set, or on --data")
    _add_data(q)
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
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

    q = run_parser(
        "disentangle",
        "score a trained run's representation against the data's known factors (dsprites, or a "
        ".npz with factors): MIG, SAP, DCI, FactorVAE and beta-VAE scores; figures of the "
        "latent x factor mutual information and of traversals labelled by factor",
    )
    q.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    q.add_argument(
        "--points",
        type=int,
        default=None,
        help="test points for MIG, SAP and DCI (default all; disentanglement_lib: 10000)",
    )
    q.add_argument(
        "--dci-points", type=int, default=None, help="of those, for DCI's trees (default all)"
    )
    q.add_argument(
        "--votes",
        type=int,
        nargs=2,
        default=[10000, 5000],
        metavar=("TRAIN", "EVAL"),
        help="factor-matched batches for the FactorVAE and beta-VAE scores",
    )
    q.add_argument("--no-figures", dest="figures", action="store_false", help="skip RUN/figures/")

    q = run_parser("sample", "draw samples from the prior and decode them")
    q.add_argument("-n", type=int, default=64, help="number of samples")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/samples.png)"
    )

    q = run_parser("reconstruct", "show test images beside their reconstructions")
    _add_data(q)
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
    q.add_argument("-n", type=int, default=16, help="number of test images")
    q.add_argument(
        "--out", type=Path, default=None, help="PNG file (default RUN/figures/reconstructions.png)"
    )

    q = run_parser("interpolate", "decode straight lines in latent space between test images")
    _add_data(q)
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
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

    q = run_parser(
        "score",
        "score every example: ELBO, log p(x), rate, reconstruction, complexity-corrected "
        "likelihood, likelihood regret, typicality; with --against, detection metrics",
    )
    _add_data(q)
    _add_data(q, "--against", "in-distribution reference (e.g. the run's own test set)")
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
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
        default=None,
        help="training images whose mean -log p(x) is typicality's reference (0: no typicality; "
        "default: 500 where the run's training data are still here, else no typicality, with a "
        "note)",
    )

    q = run_parser("encode", "write the latent means and scales of q(z|x) for a data set")
    _add_data(q)
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
    q.add_argument("--out", type=Path, required=True, help="output file (.npz)")

    q = sub.add_parser(
        "export",
        help="write a run's model as a self-contained bundle",
        description="Write the run's model as a bundle a stranger can use without the run or its "
        "data: model.safetensors (weights), model.json (architecture, data shape, likelihood), "
        "README.md (model card); load it with pyro_vae.load(DIR).",
    )
    q.add_argument("run", type=Path, help="run directory written by `pyro-vae train`")
    q.add_argument("directory", type=Path, help="the bundle's directory (new or empty)")
    q.add_argument(
        "--onnx",
        action="store_true",
        help="also write encoder.onnx (x -> q(z|x)'s parameters) and decoder.onnx (z -> "
        "p(x|z)'s parameters), checked with onnxruntime; needs pip install 'pyro-vae[export]'",
    )
    q.add_argument("--overwrite", action="store_true", help="replace a bundle already there")
    q.add_argument(
        "--name", default=None, help="the model card's title (default: the directory's name)"
    )
    _add_common(q)

    q = run_parser(
        "traverse", "latent traversals: each dimension swept across the prior's quantiles"
    )
    q.description = (
        "Latent traversals: one row per latent dimension, swept across its prior's quantiles "
        "(the 5th to the 95th percentile). Two kinds. Of a test image: with --data, or with the "
        "run's own test split where its training data are still where they were; --image picks "
        "the image (default 0); rows are the dimensions of largest KL to the prior over the data. "
        "From the prior's centre, from the run directory alone: with --from-prior or --label, and "
        "by default when the run's data are not here and --data is not given (a note says so); "
        "the base is each dimension's prior median (0 for N(0, I)); rows are the dimensions that "
        "change the decoded image most (root mean square change from the centre's image, as the "
        "dimension moves over its prior's quantiles, from the model alone). A label model (m2, "
        "cvae, m1m2, adgm, ...) draws class --label, default 0. --dims names the rows instead."
    )
    _add_data(q)
    q.add_argument("--data-dir", default=None, help="where torchvision data sets live")
    q.add_argument(
        "--image",
        type=int,
        default=argparse.SUPPRESS,
        help="index of the test image to traverse (default 0)",
    )
    q.add_argument(
        "--from-prior",
        action="store_true",
        help="traverse from the prior's centre, without data, even where the run's data are here",
    )
    q.add_argument(
        "--label",
        type=int,
        default=argparse.SUPPRESS,
        metavar="K",
        help="the class a label model (m2, cvae, m1m2, adgm, ...) draws, default 0; implies "
        "--from-prior (an image's traversal keeps the label the model infers for it)",
    )
    q.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=argparse.SUPPRESS,
        metavar="D",
        help="the latent dimensions to draw, one row each in this order (default: by score)",
    )
    q.add_argument(
        "--max-dims",
        type=int,
        default=argparse.SUPPRESS,
        help="rows: the dimensions of largest score (default 10); not with --dims",
    )
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
    from .build import read_checkpoint
    from .config import RunConfig

    overrides = {o.target: getattr(args, o.target) for o in options() if hasattr(args, o.target)}
    if args.resume:
        if args.run_dir is None:
            raise ConfigError("--resume needs --run-dir, the run to continue")
        if args.config is not None:
            raise ConfigError("--resume continues a run with its own configuration; drop --config")
        base = read_checkpoint(args.run_dir)["config"]
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


@contextlib.contextmanager
def _default_run_dir(run_dir: Path, share: bool) -> Iterator[None]:
    """``run_dir`` in the environment while the command runs (``share``): the processes a
    data-parallel run starts re-run the command and inherit the launching process's environment,
    so the default directory is named once, there. Never beyond the command: a later command in
    the same Python process names its own."""
    if not share or _DEFAULT_RUN_DIR in os.environ:
        yield
        return
    os.environ[_DEFAULT_RUN_DIR] = str(run_dir)
    try:
        yield
    finally:
        os.environ.pop(_DEFAULT_RUN_DIR, None)


def cmd_train(args: argparse.Namespace) -> int:
    from . import progress
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
    mode = "off" if args.quiet else "lines" if args.no_progress else "auto"
    with _default_run_dir(
        run_dir, not args.run_dir and config.train.devices * config.train.num_nodes > 1
    ):
        result = train(config, run_dir, resume=args.resume, progress=mode)
    if result.rank != 0:  # rank 0 draws and reports
        return 0
    if not args.no_plots:
        from . import plots  # matplotlib only where figures are drawn

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
    figures = "" if args.no_plots else ", figures/"
    print(f"run written to {run_dir} ({CONFIG}, checkpoint.pt, metrics.jsonl{figures})")
    # the epoch lines said it already, unless an earlier epoch was selected
    if summary and (not progress.outputs(mode)[1] or "best_epoch" in last):
        chosen = " (selected by validation)" if "best_epoch" in last else ""
        if "labels_used" in last:
            summary += f", labels used {last['labels_used']}"
        print(f"epoch {last['epoch']}{chosen}: {summary}")
    elif "labels_used" in last:  # a semi-supervised run says what its labels cost
        print(f"labels used {last['labels_used']} (training + validation)")
    return 0


def cmd_semi_supervised(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .semi_supervised import FIGURE, RESULTS, parse_shard, semi_supervised, summarise

    for flag, target, instead in (
        ("--model", "model.model", "--models"),
        ("--labels", "model.model_options[labels]", "--budgets"),
        ("--seed", "train.seed", "--subsets (a subset's seed is its run's)"),
    ):
        if hasattr(args, target):
            raise ConfigError(f"the experiment sets {flag} for each run; pass {instead} instead")
    if args.run_dir is not None or args.resume:
        raise ConfigError(
            "the experiment's runs live in --out DIR/runs; rerun the same command to continue"
        )
    _positive("--subsets", args.subsets)
    if args.train_subset < 0:
        raise ConfigError(f"--train-subset must be 0 (all) or positive, got {args.train_subset}")
    overrides = {o.target: getattr(args, o.target) for o in options() if hasattr(args, o.target)}
    base = RunConfig()
    if args.config is not None:
        if not args.config.is_file():
            raise ConfigError(f"no config file at {args.config}")
        base = RunConfig.from_json(args.config.read_text())
    base = _apply(base, overrides).coerced()  # typed; each run's model checks its own options
    rows = semi_supervised(
        base,
        args.out,
        models=args.models,
        budgets=args.budgets,
        subsets=args.subsets,
        train_subset=args.train_subset,
        shard=parse_shard(args.shard),
        progress=not args.no_progress,
    )
    print(f"{len(rows)} runs in {args.out / RESULTS}, figure {args.out / FIGURE}")
    for s in summarise(rows):
        accs = ", ".join(f"{100 * a:.2f}" for a in s["accuracies"])
        print(
            f"{s['model']:>6}  {s['labels_used']:>6} labels  {100 * s['mean']:6.2f} ± "
            f"{100 * s['sd']:.2f}%  ({s['subsets']} subsets: {accs})"
        )
    return 0


@dataclass
class Rows:
    """The images a serving command reads: ``x`` (on the model's device), their labels, what they
    are called in output, and the data set they came from (for a probe's training rows)."""

    x: Any
    labels: Any
    label: str
    #: the data set the rows are a split of, and which split (None: every row of a file)
    source: Any = None
    split: str | None = None


def _rows(
    args: argparse.Namespace,
    config: Any,
    run_data: Any,
    device: Any,
    name: str | None = None,
    split: str | None = None,
) -> Rows:
    """The rows ``--data NAME --data-split SPLIT`` name, prepared as the run's data (binarization):
    every row of a file with no split of its own unless a split is named, else that split (test by
    default). Without a name, the run's own data, which are then loaded and checked against the
    run's fingerprint (:class:`~pyro_vae.runs.RunData`)."""
    from .data import load_dataset, load_rows, received_data_dir

    data_dir = getattr(args, "data_dir", None)
    if name is None and data_dir is None:
        source = run_data
        label = Path(config.data.dataset).stem
    else:
        cfg = replace(
            config.data,
            dataset=name or config.data.dataset,
            data_dir=data_dir if data_dir is not None else config.data.data_dir,
        )
        # --data-dir must be read by the data set (else it is refused, not ignored), and a folder
        # the run names that is not here is never created nor downloaded into
        cfg = replace(cfg, data_dir=received_data_dir(cfg, data_dir))
        label = Path(cfg.dataset).stem if name is None else name
        if split is None:
            source, whole = load_rows(cfg)
            if whole is not None:
                x, y = whole
                return Rows(x.to(device), None if y is None else y.to(device), f"{label}-all")
        else:
            source = load_dataset(cfg)
    split = split or "test"
    x, y = (
        (source.train, source.train_labels)
        if split == "train"
        else (source.test, source.test_labels)
    )
    if source.streaming and split == "train":  # a lazy training split: read it whole
        x = x.materialize()
    labels = None if y is None else y.to(device)
    return Rows(x.to(device), labels, f"{label}-{split}", source, split)


def _limited(rows: Rows, limit: int | None) -> Rows:
    if limit is None:
        return rows
    labels = None if rows.labels is None else rows.labels[:limit]
    return replace(rows, x=rows.x[:limit], labels=labels)


def _first(n: int, data: Any) -> Any:
    import torch

    return torch.arange(min(n, data.train.shape[0]))


def _progress_on(args: argparse.Namespace) -> bool:
    return not getattr(args, "quiet", False)


def _model_device(model: Any) -> Any:
    import torch

    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .build import read_checkpoint
    from .checkpoint import CHECKPOINT
    from .evaluate import report
    from .models import Model
    from .runs import load_run

    _positive("--particles", args.particles)
    if args.limit is not None:
        _positive("--limit", args.limit)
    for name, value in (("--nll-samples", args.nll_samples), ("--iwae-samples", args.iwae_samples)):
        if value < 0:
            raise ConfigError(f"{name} must be 0 (skip) or positive, got {value}")
    config, model, data = load_run(args.run, args.device)
    rows = _limited(
        _rows(args, config, data, _model_device(model), args.data, args.data_split), args.limit
    )
    # the linear probe on the latent means: logistic regression with 100, 1000 and all training
    # labels of the same data set, scored on the evaluated rows (when the data have labels and a
    # training split other than the rows evaluated); unlabelled (-1) training rows are left out
    probe = args.probe and rows.split == "test"
    result = {"run": str(args.run), "data": rows.label, "test_points": int(rows.x.shape[0])}
    probe_x = rows.source.train if probe else None
    probe_y = rows.source.train_labels if probe else None
    if probe_y is not None and bool((probe_y < 0).any()):
        keep = (probe_y >= 0).nonzero().squeeze(-1)
        probe_x, probe_y = rows.source.rows(keep), probe_y[keep]
    if isinstance(model, Model):  # e.g. the labels a semi-supervised run used, and how it selected
        plan_state = read_checkpoint(Path(args.run) / CHECKPOINT).get("plan", {})
        result.update(model.run_summary(config, plan_state, data))
    result.update(
        report(
            model,
            rows.x,
            rows.labels,
            particles=args.particles,
            nll_samples=args.nll_samples,
            iwae_samples=args.iwae_samples,
            train_x=probe_x,
            train_labels=probe_y,
        )
    )
    if rows.split == "test" and rows.source.factors is not None:
        # the metrics of arrays that take seconds; `pyro-vae disentangle` scores all of them
        from . import disentangle as dis

        result.update(
            dis.disentanglement(
                model, rows.source, num_points=int(rows.x.shape[0]), metrics=("mig", "sap")
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


def cmd_disentangle(args: argparse.Namespace) -> int:
    from . import disentangle as dis
    from .runs import load_run

    for name, value in (("--points", args.points), ("--dci-points", args.dci_points)):
        if value is not None:
            _positive(name, value)
    for value in args.votes:
        _positive("--votes", value)
    _, model, data = load_run(args.run, args.device)
    result: dict[str, object] = {"run": str(args.run)}
    result.update(
        dis.disentanglement(
            model,
            data,
            num_points=args.points,
            dci_points=args.dci_points,
            num_votes=tuple(args.votes),
        )
    )
    if args.figures:
        assert data.factors is not None  # disentanglement() refused data without factors
        x = data.test if args.points is None else data.test[: args.points]
        mi = dis.mutual_information_matrix(
            dis.encoder(model, args.device)(x), data.factors.test_factors[: x.shape[0]]
        )
        out = Path(args.run) / "figures"
        out.mkdir(exist_ok=True)
        names = data.factors.factor_names
        result["figures"] = [
            str(dis.mi_figure(mi, names, out / "factor_mi.png")),
            str(dis.traversal_figure(model, x, mi, names, out / "factor_traversals.png")),
        ]
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for k, v in result.items():
            v = " ".join(v) if isinstance(v, list) else v
            print(f"{k:<{width}}  {v:.4f}" if isinstance(v, float) else f"{k:<{width}}  {v}")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from . import plots
    from .runs import load_run

    if args.out is not None:
        _check_figure_path(args.out)
    config, model, data = load_run(args.run, args.device)
    figs = run_folder(args.run, plots.FIGURES)  # no link in a received run followed
    if args.command == "sample":
        _positive("-n", args.n)
        path = plots.samples(model, args.out or figs / "samples.png", n=args.n)
    elif args.command == "reconstruct":
        _positive("-n", args.n)
        x = _rows(args, config, data, _model_device(model), args.data, args.data_split).x
        path = plots.reconstructions(model, x, args.out or figs / "reconstructions.png", n=args.n)
    else:
        _positive("--steps", args.steps)
        _positive("--pairs", args.pairs)
        x = _rows(args, config, data, _model_device(model), args.data, args.data_split).x
        path = plots.interpolation(
            model, x, args.out or figs / "interpolation.png", args.steps, args.pairs
        )
    if path is None:
        raise ConfigError("this data set is not image-shaped, so there is no image to draw")
    print(path)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from . import plots
    from .runs import load_run
    from .train import _read_metrics

    _, model, data = load_run(args.run, args.device)
    history = _read_metrics(Path(args.run) / "metrics.jsonl")
    for path in plots.draw_all(model, data, history, args.run, projection=args.projection):
        print(path)
    return 0


#: ``--against`` without a name: the run's own data set
RUN_DATA = ":run:"


def cmd_score(args: argparse.Namespace) -> int:
    from . import scores
    from .errors import DataError
    from .runs import load_run

    _positive("--nll-samples", args.nll_samples)
    if args.regret_steps < 0:
        raise ConfigError(
            f"--regret-steps must be 0 (no regret) or positive, got {args.regret_steps}"
        )
    if args.limit is not None:
        _positive("--limit", args.limit)
    if args.typicality_points is not None and args.typicality_points < 0:
        raise ConfigError(
            f"--typicality-points must be 0 or positive, got {args.typicality_points}"
        )
    if args.out is not None and args.out.suffix not in (".csv", ".npz"):
        raise ConfigError(f"--out {args.out}: the table is written as .csv or .npz")
    config, model, data = load_run(args.run, args.device)
    device = _model_device(model)
    progress = _progress_on(args)
    # the rows to score are read first: bad --data is refused before minutes of reference scores
    rows = _limited(_rows(args, config, data, device, args.data, args.data_split), args.limit)

    points = args.typicality_points
    reference = None
    if points is None:  # the default: typicality where the run's training data are here
        try:
            points = 500 if data.train is not None else 0
        except DataError as e:
            points = 0
            if not args.quiet:
                print(
                    f"pyro-vae: note: no typicality score: it needs the run's training data ({e})",
                    file=sys.stderr,
                )
    if points:
        ref_x = data.rows(_first(points, data))
        reference = scores.score(
            model,
            ref_x.to(device),
            num_samples=args.nll_samples,
            scores=("log_px",),
            progress=progress,
        )["log_px"]
    options = dict(
        num_samples=args.nll_samples, regret_steps=args.regret_steps, reference_log_px=reference
    )
    names = [s for s in scores.SCORES if reference is not None or s != "typicality"]
    refused = scores.complexity_refused(model, None, rows.x)
    if refused is not None:
        names.remove("complexity")
        if not args.quiet:
            print(f"pyro-vae: note: no complexity score: {refused}", file=sys.stderr)
    table = scores.score(model, rows.x, scores=tuple(names), progress=progress, **options)
    out = args.out or run_path(args.run, "scores", f"{Path(rows.label).name}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    scores.write_table(table, out)
    result: dict[str, Any] = {
        "run": str(args.run),
        "data": rows.label,
        "examples": int(rows.x.shape[0]),
        "table": str(out),
        "mean": {k: float(v.mean()) for k, v in table.items()},
    }
    if args.against is not None:
        name = None if args.against == RUN_DATA else args.against
        ref = _limited(_rows(args, config, data, device, name, args.against_split), args.limit)
        ref_table = scores.score(model, ref.x, scores=tuple(names), progress=progress, **options)
        result["against"] = ref.label
        result["detection"] = scores.detection_metrics(ref_table, table)
        figs = out.parent
        result["figures"] = [
            str(scores.roc_figure(ref_table, table, figs / f"{out.stem}-roc.png")),
            str(scores.histogram_figure(ref_table, table, figs / f"{out.stem}-histograms.png")),
        ]
    if args.json:
        print(json.dumps(result))
        return 0
    label = rows.label
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
    from .runs import load_run

    if args.out.suffix != ".npz":
        raise ConfigError(f"--out {args.out}: the encoding is written as .npz")
    config, model, data = load_run(args.run, args.device)
    rows = _rows(args, config, data, _model_device(model), args.data, args.data_split)
    enc = encode(model, rows.x, rows.labels)
    write_encoding(enc, args.out)
    print(args.out)
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    from . import plots
    from .errors import DataError
    from .models.base import as_model
    from .runs import load_run

    _positive("--steps", args.steps)
    for name in ("image", "label", "dims", "max_dims"):  # suppressed defaults: None when not given
        setattr(args, name, getattr(args, name, None))
    if args.max_dims is not None:
        _positive("--max-dims", args.max_dims)
        if args.dims is not None:
            raise ConfigError(
                "--max-dims caps the rows chosen by score and --dims names them; give one of the two"
            )
    if args.out is not None:
        _check_figure_path(args.out)
    given = [
        flag
        for flag, value in (
            ("--data", args.data),
            ("--data-split", args.data_split),
            ("--data-dir", args.data_dir),
            ("--image", args.image),
        )
        if value is not None
    ]
    prior = args.from_prior or args.label is not None
    if prior and given:
        why = "--from-prior" if args.from_prior else "--label (a traversal from the prior)"
        raise ConfigError(
            f"{why} draws no test image, so {', '.join(given)} would not be used; drop them, or "
            "drop it to traverse an image"
        )
    config, model, data = load_run(args.run, args.device)
    classes = as_model(model, pair=False).num_classes
    if args.label is not None and classes is None:
        raise ConfigError(
            f"--label {args.label}: this run's model has no labels to condition on; leave it out"
        )
    if args.label is not None and not 0 <= args.label < classes:
        raise ConfigError(f"--label must be a class in 0..{classes - 1}, got {args.label}")
    x = None
    if not prior:
        try:
            x = _rows(args, config, data, _model_device(model), args.data, args.data_split).x
        except DataError as e:
            if given:  # an image was asked for: no silent change of what is drawn
                raise
            _note(args, f"no test image to traverse ({e}); drawing it from the prior's centre")
    if x is not None and args.image is not None and not 0 <= args.image < x.shape[0]:
        raise ConfigError(f"--image must lie in 0..{x.shape[0] - 1}, got {args.image}")
    if x is None and args.label is None and classes is not None:
        _note(args, f"the traversal from the prior draws class 0 of 0..{classes - 1} (--label K)")
    out = args.out or run_path(args.run, plots.FIGURES, "traversal.png")
    options: dict[str, Any] = dict(steps=args.steps, dims=args.dims, label=args.label)
    if args.max_dims is not None:
        options["max_dims"] = args.max_dims
    if x is not None:
        options["image"] = args.image
    try:
        path = plots.traversal(model, x, out, **options)
    except ConfigError as e:
        if str(e).startswith("dims "):  # the Python argument is the --dims flag here
            raise ConfigError(f"--{e}") from None
        raise
    if path is None:
        raise ConfigError("this data set is not image-shaped, so there is no image to draw")
    print(path)
    return 0


def _note(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"pyro-vae: note: {message}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    if args.onnx:
        import importlib.util

        if importlib.util.find_spec("onnx") is None:
            raise ConfigError(
                "--onnx needs the onnx package (and onnxruntime to check the graphs): "
                "pip install 'pyro-vae[export]'"
            )
    path = export(
        args.run, args.directory, onnx=args.onnx, overwrite=args.overwrite, name=args.name
    )
    print(path)
    return 0


COMMANDS = {
    "export": cmd_export,
    "score": cmd_score,
    "encode": cmd_encode,
    "traverse": cmd_traverse,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "disentangle": cmd_disentangle,
    "semi-supervised": cmd_semi_supervised,
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
        from .progress import reporting

        # evaluations report progress as the command's output allows (a bar or lines on stderr)
        with reporting(not getattr(args, "quiet", False)):
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
