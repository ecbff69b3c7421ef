"""The ``pyro-vae`` command line: ``train``, ``evaluate``, ``sample``, ``reconstruct``, ``interpolate``, ``plot``.

Every training option maps to one field of :class:`~pyro_vae.config.RunConfig`; the table ``OPTIONS``
below is that map, so an option added there is parsed, documented, saved with the run and checked on
``--resume`` in one place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, PyroVAEError


def _choices(registry_name: str) -> str:
    from . import guides, likelihoods, models, nn, objectives, priors

    reg = {
        "guide": guides.GUIDES,
        "prior": priors.PRIORS,
        "objective": objectives.OBJECTIVES,
        "likelihood": likelihoods.LIKELIHOODS,
        "network": nn.NETWORKS,
        "model": models.MODELS,
    }[registry_name]
    return ", ".join(reg.names())


def _key_value(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


@dataclass(frozen=True)
class Option:
    """One command-line flag and the config field it sets (``section.field`` or ``section.dict[key]``)."""

    flags: tuple[str, ...]
    target: str
    help: str
    type: Any = str
    nargs: str | None = None
    choices: str | None = None  # registry whose names are listed in the help


OPTIONS: list[Option] = [
    Option(
        ("--dataset",),
        "data.dataset",
        "digits (bundled), mnist, fashion-mnist, or a .npz/.npy path",
    ),
    Option(
        ("--data-dir",),
        "data.data_dir",
        "where torchvision data sets live (default: $PYRO_VAE_DATA or ~/.cache/pyro-vae)",
    ),
    Option(
        ("--binarize",),
        "data.binarize",
        "none (pixels in [0,1]), dynamic (redrawn every epoch) or static",
    ),
    Option(
        ("--test-fraction",),
        "data.test_fraction",
        "test share for data without a test split",
        float,
    ),
    Option(("--model",), "model.model", "generative model", choices="model"),
    Option(("--latent-dim",), "model.latent_dim", "size of z", int),
    Option(
        ("--latent-dim2",),
        "model.latent_dim2",
        "hvae: size of z2 (0: half of z1); m1m2: size of M2's z (0: z1's)",
        int,
    ),
    Option(("--network",), "model.network", "encoder/decoder family", choices="network"),
    Option(
        ("--hidden",),
        "model.hidden",
        "hidden layer sizes of the encoder (decoder mirrors them)",
        int,
        "+",
    ),
    Option(("--activation",), "model.activation", "relu, tanh, softplus, elu, gelu or silu"),
    Option(("--likelihood",), "model.likelihood", "p(x|z)", choices="likelihood"),
    Option(
        ("--likelihood-opt",),
        "model.likelihood_options[]",
        "likelihood option KEY=VALUE, e.g. scale=0.1 learn_scale=true",
        _key_value,
        "+",
    ),
    Option(("--guide",), "model.guide", "variational family q(z|x)", choices="guide"),
    Option(("--guide-opt",), "model.guide_options[]", "guide option KEY=VALUE", _key_value, "+"),
    Option(
        ("--flows",),
        "model.guide_options[num_flows]",
        "number of flow layers K of a flow guide (planar, radial, sylvester, iaf, spline)",
        int,
    ),
    Option(("--prior",), "model.prior", "prior p(z)", choices="prior"),
    Option(("--prior-opt",), "model.prior_options[]", "prior option KEY=VALUE", _key_value, "+"),
    Option(("--objective",), "train.objective", "training objective", choices="objective"),
    Option(
        ("--objective-opt",),
        "train.objective_options[]",
        "objective option KEY=VALUE",
        _key_value,
        "+",
    ),
    Option(
        ("--alpha",), "train.objective_options[alpha]", "renyi: order alpha of the bound", float
    ),
    Option(
        ("--beta",),
        "train.objective_options[beta]",
        "weight on log p(z) - log q(z|x) of the latents (beta-VAE), any objective",
        float,
    ),
    Option(
        ("--kl-anneal",),
        "train.objective_options[kl_anneal]",
        "epochs of linear KL warm-up, from --kl-anneal-start to --beta",
        int,
    ),
    Option(
        ("--kl-anneal-start",),
        "train.objective_options[kl_anneal_start]",
        "KL weight at epoch 0 under --kl-anneal (default 0)",
        float,
    ),
    Option(
        ("--free-bits",),
        "train.objective_options[free_bits]",
        "free bits: KL floor in nats per latent dimension (Kingma et al. 2016)",
        float,
    ),
    Option(
        ("--particles", "-k"),
        "train.particles",
        "samples per data point in the objective (vectorised)",
        int,
    ),
    Option(
        ("--eval-particles",),
        "train.eval_particles",
        "samples per data point for the per-epoch test ELBO",
        int,
    ),
    Option(("--epochs",), "train.epochs", "passes over the training set", int),
    Option(("--batch-size",), "train.batch_size", "data points per step", int),
    Option(("--lr",), "train.lr", "Adam learning rate", float),
    Option(("--seed",), "train.seed", "random seed; fixes the result on a given device", int),
    Option(("--device",), "train.device", "auto (CUDA when present), cpu, cuda or cuda:N"),
    Option(("--labels",), "train.labels", "m2: labelled training images (class-balanced)", int),
    Option(("--val-size",), "train.val_size", "m2: validation images (default 10%, max 5000)", int),
    Option(
        ("--aux-weight",),
        "train.aux_weight",
        "m2: alpha of the classification loss per labelled image (default 50)",
        float,
    ),
    Option(
        ("--labelled-every",),
        "train.labelled_every",
        "m2: a labelled batch after every k unlabelled ones (0: one labelled pass per epoch)",
        int,
    ),
    Option(
        ("--m1-epochs",),
        "train.m1_epochs",
        "m1m2: epochs that fit M1 before M2 (default: half of --epochs)",
        int,
    ),
]


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
    for opt in OPTIONS:
        help_text = opt.help + (f" (one of: {_choices(opt.choices)})" if opt.choices else "")
        help_text = help_text.replace("%", "%%")  # argparse %-formats help strings
        # default=SUPPRESS: only options the user typed reach the config, so --resume can tell
        # "not given" (use the run's value) from "given" (must match the run's value)
        p.add_argument(
            *opt.flags,
            dest=opt.target,
            type=opt.type,
            nargs=opt.nargs,
            help=help_text,
            default=argparse.SUPPRESS,
        )
    p.add_argument(
        "--run-dir", type=Path, help="where the run is written (default: runs/DATASET-MODEL-TIME)"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its checkpoint"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="skip the figures at the end")
    p.add_argument(
        "--config", type=Path, help="start from this config.json; options given here override it"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs, trained with SVI.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Train a model; writes config.json, checkpoint.pt, metrics.jsonl and figures/ into the run directory.",
    )
    _add_train_options(p)

    def run_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help_text, description=help_text)
        q.add_argument("run", type=Path, help="run directory written by `pyro-vae train`")
        q.add_argument("--device", default="cpu", help="device to load the model on")
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
    return parser


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


def cmd_train(args: argparse.Namespace) -> int:
    from . import plots
    from .checkpoint import CONFIG, load_checkpoint
    from .config import RunConfig
    from .train import train

    overrides = {o.target: getattr(args, o.target) for o in OPTIONS if hasattr(args, o.target)}
    if args.resume:
        if args.run_dir is None:
            raise ConfigError("--resume needs --run-dir, the run to continue")
        base = load_checkpoint(args.run_dir)["config"]
    elif args.config is not None:
        if not args.config.exists():
            raise ConfigError(f"no config file at {args.config}")
        try:
            base = RunConfig.from_json(args.config.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{args.config} is not valid JSON: {e}") from None
    else:
        base = RunConfig()
    config = _apply(base, overrides).validate()
    run_dir = (
        args.run_dir
        or Path("runs")
        / f"{Path(config.data.dataset).stem}-{config.model.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    result = train(config, run_dir, resume=args.resume, progress=not args.no_progress)
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
    config, model, data = load_run(args.run, args.device)
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

    _, model, data = load_run(args.run, args.device)
    figs = Path(args.run) / plots.FIGURES
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

    _, model, data = load_run(args.run, args.device)
    history = _read_metrics(Path(args.run) / "metrics.jsonl")
    for path in plots.draw_all(model, data, history, args.run, projection=args.projection):
        print(path)
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "sample": cmd_figure,
    "reconstruct": cmd_figure,
    "interpolate": cmd_figure,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PyroVAEError as e:
        print(f"pyro-vae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if getattr(args, "command", None) == "train" and getattr(args, "run_dir", None):
            hint = f"; continue with: pyro-vae train --run-dir {args.run_dir} --resume"
        print(f"pyro-vae: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
