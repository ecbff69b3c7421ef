"""Bundles: a trained model as a directory a stranger can use without the run, its data or pickle.

A bundle holds

* ``model.safetensors``: the weights (safetensors: tensors and a JSON header, nothing that runs);
* ``model.json``: the architecture (every part and option, as the configuration records it), the
  shape of one datum, the number of classes, the likelihood, and what the model was trained on;
* ``README.md``: a model card (data, training options, test ELBO / log p(x), date, how to load);
* with ``onnx=True``, ``encoder.onnx`` (x -> the parameters of q(z|x)) and ``decoder.onnx``
  (z -> the parameters of p(x|z)), checked against torch with onnxruntime when it is installed.

:func:`load` rebuilds the model from ``model.json`` and reads the weights; it needs nothing but
pyro-vae (no run directory, no data, no ONNX libraries).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import atomic_write_bytes, atomic_write_text, file_mode, umask
from .errors import CheckpointError, ConfigError

FORMAT = "pyro-vae-bundle"
VERSION = 1
WEIGHTS = "model.safetensors"
ARCHITECTURE = "model.json"
CARD = "README.md"
ONNX_GRAPHS = ("encoder", "decoder")
#: how far an ONNX graph's outputs may be from torch's on the same inputs (relative)
ONNX_RTOL = 1e-5


def describe(model: nn.Module) -> dict[str, Any]:
    """The architecture of ``model`` as JSON-ready data: its description
    (:func:`pyro_vae.describe`: the class and constructor arguments of the model and of every part
    in it), the configuration section that names its parts and options, the shape of one datum and
    the number of classes; :func:`rebuild` turns it back into a model."""
    from .models.base import as_model
    from .runspec import model_record

    model = as_model(model)
    section, description = model_record(model.recorded())
    if "error" in description:
        raise ConfigError(f"cannot export this model: {description['error']}")
    return {
        "description": description,
        "model": {k: _plain(v) for k, v in section.items()},
        "x_shape": None if model.x_shape is None else [int(d) for d in model.x_shape],
        "num_classes": model.num_classes,
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def rebuild(architecture: Mapping[str, Any]) -> nn.Module:
    """The model :func:`describe` described, with freshly initialised weights."""
    from .describe import rebuild as rebuild_part

    return rebuild_part(architecture["description"])


def distribution_parameters(d: Any) -> dict[str, torch.Tensor]:
    """The parameters a distribution was built from (``loc``/``scale``, ``logits``, ...), by name,
    through ``Independent`` wrappers; a distribution with transforms (a flow) has none that
    describe it alone."""
    import torch.distributions as td

    while isinstance(d, td.Independent):
        d = d.base_dist
    if isinstance(d, td.TransformedDistribution):
        raise ConfigError(
            f"q or p is a transformed distribution ({type(d).__name__}): its parameters do not "
            "describe it without the transforms, so it has no ONNX graph; export without --onnx"
        )
    # lazily derived parameters (Bernoulli's probs from its logits) are absent until read
    params = {
        k: d.__dict__[k] for k in d.arg_constraints if isinstance(d.__dict__.get(k), torch.Tensor)
    }
    if not params:
        raise ConfigError(f"{type(d).__name__} has no tensor parameters to export")
    return params


class _Graph(nn.Module):
    """One of a model's ONNX graphs: a tensor in, the parameters of a distribution out."""

    def __init__(self, model: nn.Module, fn: Any) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(distribution_parameters(self.fn(x)).values())


def _onnx(model: nn.Module, out: Path) -> dict[str, Any]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` into ``out``; check each with onnxruntime on
    random inputs when it is installed; return what ``model.json`` says about them."""
    import warnings

    graphs = model.onnx_graphs()
    written = {}
    for name in ONNX_GRAPHS:
        fn, event_shape = graphs[name]
        example = torch.rand(3, *event_shape)
        with torch.no_grad():
            names = list(distribution_parameters(fn(example)))
        path = out / f"{name}.onnx"
        with warnings.catch_warnings():
            # the TorchScript exporter: the torch.export one needs onnxscript besides onnx
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Graph(model, fn),
                (example,),
                str(path),
                dynamo=False,
                input_names=["input"],
                output_names=names,
                dynamic_axes={k: {0: "batch"} for k in ["input", *names]},
            )
        os.chmod(path, file_mode())
        written[name] = {"file": path.name, "input": ["batch", *event_shape], "outputs": names}
        check_onnx(model, out, name, fn, event_shape, strict=False)
    return written


def check_onnx(
    model: nn.Module, bundle: Path, name: str, fn: Any, event_shape: Any, *, strict: bool = True
) -> float | None:
    """The largest relative difference between the graph ``name`` run by onnxruntime and torch, on
    random inputs; raises :class:`CheckpointError` above :data:`ONNX_RTOL`. ``None`` when
    onnxruntime is not installed and ``strict`` is false."""
    try:
        import onnxruntime
    except ImportError:
        if strict:
            raise
        return None
    session = onnxruntime.InferenceSession(
        str(Path(bundle) / f"{name}.onnx"), providers=["CPUExecutionProvider"]
    )
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch in (1, 7):
        x = torch.rand(batch, *event_shape, generator=g)
        if name == "decoder":
            x = torch.randn(batch, *event_shape, generator=g)
        with torch.no_grad():
            expected = distribution_parameters(fn(x))
        got = session.run(None, {"input": x.numpy()})
        for (key, want), have in zip(expected.items(), got):
            want = want.numpy()
            scale = max(float(abs(want).max()), 1e-12)
            diff = float(abs(have - want).max()) / scale
            if have.shape != want.shape or not math.isfinite(diff) or diff > ONNX_RTOL:
                raise CheckpointError(
                    f"the ONNX {name} graph's {key} differs from torch's by {diff:.2g} (relative) "
                    f"on a batch of {batch}; this is a bug, please report it"
                )
            worst = max(worst, diff)
    return worst


def _command(config: Any) -> str:
    """``pyro-vae train ...`` with the options that differ from their defaults."""
    from .config import SECTIONS, default_of

    parts = ["pyro-vae train"]
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            value = getattr(getattr(config, section), f.name)
            if value == default_of(section, f.name):
                continue
            flag = (f.metadata.get("flags") or ["--" + f.name.replace("_", "-")])[0]
            if isinstance(value, Mapping):
                text = " ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, (tuple, list)):
                text = " ".join(map(str, value))
            else:
                text = str(value)
            parts.append(f"{flag} {text}")
    return " ".join(parts)


def _card(info: dict[str, Any]) -> str:
    trained = info.get("trained") or {}
    data = info.get("data") or {}
    metrics = trained.get("metrics") or {}
    arch = info["architecture"]["model"]
    lines = [
        f"# {info['name']}",
        "",
        f"A variational autoencoder exported by pyro-vae {info['pyro_vae_version']} on "
        f"{info['exported']}.",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{arch.get('model')}` (latent size {arch.get('latent_dim')}) |",
        f"| guide q(z\\|x) | `{arch.get('guide', 'diagonal')}` |",
        f"| prior p(z) | `{arch.get('prior', 'normal')}` |",
        f"| likelihood p(x\\|z) | `{info['likelihood']['name']}` |",
        f"| datum shape | {tuple(info['architecture']['x_shape'] or ())} |",
        f"| classes | {info['architecture']['num_classes'] or 'none'} |",
        f"| trained on | {data.get('name', 'not recorded')} "
        + (
            f"({data['train_size']} training, {data['test_size']} test points, "
            f"binarization {data.get('binarize')}) |"
            if "train_size" in data
            else "|"
        ),
    ]
    if trained:
        lines.append(f"| epochs | {trained.get('epochs')} |")
        for key, label in (
            ("test_elbo", "test ELBO (nats per datum)"),
            ("test_iwae", "test IWAE bound"),
            ("test_log_likelihood", "test log p(x) (importance sampling)"),
        ):
            if isinstance(metrics.get(key), (int, float)):
                lines.append(f"| {label} | {metrics[key]:.3f} |")
        lines.append(f"| trained with | `{trained.get('command')}` |")
        if trained.get("date"):
            lines.append(f"| trained | {trained['date']} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import pyro, pyro_vae",
        "model = pyro_vae.load('THIS_DIRECTORY')",
        "pyro.set_rng_seed(0)",
        "images = model.sample(16)            # decoder means of prior draws",
        "q = model.encode(x)                  # q(z|x) for a batch x",
        "log_px = pyro_vae.log_likelihood(model, x, num_samples=1000)",
        "```",
        "",
        f"`{WEIGHTS}` holds the weights (safetensors), `{ARCHITECTURE}` the architecture.",
    ]
    if info.get("onnx"):
        lines += [
            "",
            "## ONNX",
            "",
        ]
        for name, graph in info["onnx"].items():
            lines.append(
                f"- `{graph['file']}`: input `input` {tuple(graph['input'])} -> "
                f"{', '.join('`' + o + '`' for o in graph['outputs'])}"
                + (" (q(z|x))" if name == "encoder" else " (p(x|z))")
            )
    return "\n".join(lines) + "\n"


def _source(source: Any, device: str) -> tuple[nn.Module, dict[str, Any], dict[str, Any] | None]:
    """(model, data description, training description) of a run directory, a
    :class:`~pyro_vae.train.TrainResult` or a model."""
    if isinstance(source, (str, os.PathLike)):
        from .runs import load_model
        from .train import _read_metrics

        run = Path(source)
        config, model, ckpt = load_model(run, device)
        history = _read_metrics(run / "metrics.jsonl")
        data = dict(ckpt.get("data_spec") or {"name": config.data.dataset})
        date = datetime.datetime.fromtimestamp((run / "checkpoint.pt").stat().st_mtime)
        return model, data, _trained(config, history, date.strftime("%Y-%m-%d %H:%M"))
    if isinstance(source, nn.Module):
        return source, {}, None
    model = source.model  # a TrainResult
    from .runs import data_spec

    data = data_spec(source.dataset, from_python=False)
    data.pop("from_python")
    return model, data, _trained(source.config, source.history, None)


def _trained(config: Any, history: list[dict[str, Any]], date: str | None) -> dict[str, Any]:
    last = history[-1] if history else {}
    if last.get("best_epoch"):  # a model that selects an epoch keeps that epoch's weights
        last = next((r for r in history if r["epoch"] == last["best_epoch"]), last)
    metrics = {k: v for k, v in last.items() if isinstance(v, (int, float)) and k != "epoch"}
    return {
        "epochs": last.get("epoch"),
        "metrics": metrics,
        "command": _command(config),
        "date": date,
        "config": config.to_dict(),
    }


def export(
    source: Any,
    directory: str | Path,
    *,
    onnx: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    device: str = "cpu",
) -> Path:
    """Write the bundle of ``source`` (a model, a :class:`~pyro_vae.train.TrainResult` or a run
    directory) into ``directory``, which must not exist (or be empty, or ``overwrite=True``).

    The bundle is written beside ``directory`` and renamed into place, so an interrupted export
    leaves nothing half-written. Returns the bundle's path.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is a file; give a directory for the bundle")
    if directory.is_dir() and any(directory.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{directory} already holds files; choose a new directory or pass overwrite=True "
                "(--overwrite)"
            )
        if not _only_a_bundle(directory):
            # a run directory, or one that holds a run or other work: never deleted by an export
            raise ConfigError(
                f"{directory} holds files that are not an exported bundle's; overwrite=True "
                "(--overwrite) only replaces an earlier bundle. Choose a new directory"
            )
    model, data, trained = _source(source, device)
    architecture = describe(model)
    model = model.to("cpu").eval()
    info: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "name": name or directory.resolve().name,
        "pyro_vae_version": _version(),
        "exported": datetime.date.today().isoformat(),
        "architecture": architecture,
        "likelihood": {
            "name": architecture["model"].get("likelihood", "bernoulli"),
            "options": architecture["model"].get("likelihood_options", {}),
        },
        "data": data,
        "trained": trained,
        "weights": WEIGHTS,
    }
    from safetensors.torch import save

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp's 0o700, as mkdir would make it
        # clones: safetensors refuses tensors that share memory (tied weights)
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        weights = save(state, metadata={"format": FORMAT})
        atomic_write_bytes(tmp / WEIGHTS, lambda f: f.write(weights))
        if onnx:
            info["onnx"] = _onnx(model, tmp)
        atomic_write_text(tmp / ARCHITECTURE, json.dumps(info, indent=2, sort_keys=True) + "\n")
        atomic_write_text(tmp / CARD, _card(info))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _only_a_bundle(directory: Path) -> bool:
    """Whether ``directory`` holds an exported bundle's files and nothing else."""
    names = {WEIGHTS, ARCHITECTURE, CARD}
    entries = list(directory.iterdir())
    return (directory / ARCHITECTURE).is_file() and all(
        e.is_file() and not e.is_symlink() and (e.name in names or e.suffix == ".onnx")
        for e in entries
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyro-vae")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def read_info(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a bundle, checked to be one this pyro-vae reads."""
    path = Path(directory) / ARCHITECTURE
    if not path.is_file():
        raise CheckpointError(
            f"no bundle at {directory}: {ARCHITECTURE} is missing (write one with pyro-vae export)"
        )
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-vae bundle description")
    if info.get("version") != VERSION:
        raise CheckpointError(
            f"{path} is bundle format {info.get('version')}; this pyro-vae reads format {VERSION}"
        )
    return info


def load(directory: str | Path, device: str = "cpu") -> nn.Module:
    """The model of a bundle written by :func:`export`, on ``device`` and in eval mode, ready to
    sample, encode and score. Reads ``model.json`` and ``model.safetensors`` only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .checkpoint import load_model_state
    from .runs import resolve_device

    info = read_info(directory)
    try:
        model = rebuild(info["architecture"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{directory}/{ARCHITECTURE} is damaged ({e!r} missing)") from None
    path = Path(directory) / WEIGHTS
    try:
        state = load_file(path)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"cannot read the weights {path}: {e}") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite weights ({bad[0]}); it is damaged")
    load_model_state(model, state, path)
    return model.to(resolve_device(device)).eval()
