"""The option audit: for every ``pyro-vae train`` option and every registered model, the option either
changes the saved configuration and the trained result, or is refused with a one-line error.

No option is silently ignored. A new option must be added to ``AUDIT`` (the test of the table fails
otherwise), and a new model is audited for free.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyro_vae import MODELS, PyroVAEError
from pyro_vae.cli import options, train_config
from pyro_vae.train import train  # what the command line runs: its errors name flags

#: flag -> (context options, the option with a non-default value); the option is compared against
#: the same run with the context alone
AUDIT: dict[str, tuple[list[str], list[str]]] = {
    "--dataset": ([], ["--dataset", "{other}"]),
    "--data-dir": ([], ["--data-dir", "{tmp}"]),
    # the flag repeated: a second --dataset-opt adds its pairs to the first's
    "--dataset-opt": (
        ["--dataset", "dsprites", "--dataset-opt", "size=32", "--dataset-opt", "test_size=16"],
        ["--dataset-opt", "split_seed=1"],
    ),
    "--binarize": ([], ["--binarize", "static"]),
    "--test-fraction": ([], ["--test-fraction", "0.3"]),
    "--latent-dim": ([], ["--latent-dim", "3"]),
    "--network": ([], ["--network", "conv"]),
    "--network-opt": (["--network", "resnet"], ["--network-opt", "channels=4"]),
    "--hidden": ([], ["--hidden", "16"]),
    "--activation": ([], ["--activation", "tanh"]),
    "--likelihood": ([], ["--likelihood", "gaussian"]),
    "--likelihood-opt": (["--likelihood", "gaussian"], ["--likelihood-opt", "scale=0.5"]),
    "--guide": ([], ["--guide", "lowrank"]),
    "--guide-opt": ([], ["--guide-opt", "min_scale=0.1"]),
    "--flows": (["--guide", "planar"], ["--flows", "3"]),
    "--prior": ([], ["--prior", "mixture"]),
    "--prior-opt": (["--prior", "mixture"], ["--prior-opt", "components=3"]),
    "--latent-dim2": ([], ["--latent-dim2", "3"]),
    "--aux-dim": ([], ["--aux-dim", "3"]),
    "--epochs": ([], ["--epochs", "3"]),
    "--batch-size": ([], ["--batch-size", "8"]),
    "--lr": ([], ["--lr", "0.01"]),
    "--objective": ([], ["--objective", "iwae"]),
    "--particles": ([], ["--particles", "2"]),
    "--objective-opt": (["--objective", "renyi", "-k", "2"], ["--objective-opt", "alpha=0.5"]),
    "--alpha": (["--objective", "renyi", "-k", "2"], ["--alpha", "0.5"]),
    "--beta": ([], ["--beta", "2"]),
    "--kl-anneal": ([], ["--kl-anneal", "2"]),
    "--kl-anneal-start": (["--kl-anneal", "2"], ["--kl-anneal-start", "0.5"]),
    "--free-bits": ([], ["--free-bits", "0.5"]),
    "--seed": ([], ["--seed", "1"]),
    "--eval-particles": ([], ["--eval-particles", "3"]),
    "--labels": ([], ["--labels", "9"]),
    "--val-labels": ([], ["--val-labels", "2"]),
    "--patience": (["--val-labels", "2", "--epochs", "8"], ["--patience", "1"]),
    "--val-size": ([], ["--val-size", "7"]),
    "--aux-weight": ([], ["--aux-weight", "5"]),
    "--labelled-every": ([], ["--labelled-every", "0"]),
    "--m1-epochs": ([], ["--m1-epochs", "0"]),
    "--model-opt": ([], ["--model-opt", "labelled_every=0"]),
    "--image-size": ([], ["--image-size", "4"]),
    "--image-mode": ([], ["--image-mode", "L"]),
    "--precision": ([], ["--precision", "bf16-mixed"]),
}
#: options that rightly leave the result alone, and why
EXEMPT = {
    "--model": "selects the model the audit runs over",
    "--device": "selects the hardware; one result on a given device is the point (test_train)",
    "--fast": "a faster route to the same updates (bit for bit: tests/test_fast.py)",
    "--loading": "another route to the same batches (identical results: tests/test_streaming.py)",
    "--workers": "how many processes read streamed batches (tests/test_streaming.py)",
    "--devices": "starts processes, which a test in this one cannot (tests/test_distributed.py)",
    "--num-nodes": "starts processes on other machines (refusals: tests/test_engine.py)",
    "--strategy": "how the processes of --devices run (tests/test_distributed.py)",
    "--logger": "writes logs beside the run, not the result (tests/test_loggers.py)",
}


def test_the_audit_covers_every_option() -> None:
    flags = {o.flags[0] for o in options()}
    assert flags == set(AUDIT) | set(EXEMPT)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("audit")
    out = {"tmp": str(tmp)}
    for name, seed in (("data", 0), ("other", 1)):
        rng = np.random.default_rng(seed)
        x = rng.random((64, 1, 8, 8)).astype(np.float32)  # continuous, so binarizing changes it
        y = np.arange(64) % 3
        path = tmp / f"{name}.npz"
        np.savez(path, x_train=x[:48], x_test=x[48:], y_train=y[:48], y_test=y[48:])
        out[name] = str(path)
    return out


def _base(model: str, files: dict[str, str]) -> list[str]:
    argv = ["--dataset", files["data"], "--model", model, "--epochs", "2", "--batch-size", "16"]
    argv += ["--latent-dim", "2", "--hidden", "8"]
    if "labels" in MODELS.parameters(model):
        argv += ["--labels", "6"]
    return argv


def _run(argv: list[str]) -> tuple[dict, dict, list] | str:
    """(config, final weights, history) of a run, or the one-line error that refused it."""
    try:
        config = train_config(argv)
        result = train(config, progress=False)
    except PyroVAEError as e:
        message = str(e)
        assert message and "\n" not in message, f"not one line: {message!r}"
        return message
    history = [{k: v for k, v in r.items() if k != "epoch_time"} for r in result.history]
    return config.to_dict(), result.model.state_dict(), history


def _same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize("model", MODELS.names())
def test_no_option_is_silently_ignored(model, files) -> None:
    baselines: dict[tuple[str, ...], object] = {}
    ignored, refused = [], []
    for flag, (context, change) in AUDIT.items():
        base = _base(model, files) + context
        key = tuple(context)
        if key not in baselines:
            baselines[key] = _run(base)
        before = baselines[key]
        after = _run(base + [a.format(**files) for a in change])
        if isinstance(after, str):
            assert isinstance(before, str) or flag in after or flag.lstrip("-") in after, (
                f"{flag}: refused without naming it: {after}"
            )
            refused.append(flag)
            continue
        assert not isinstance(before, str), f"{flag}: the context {context} was refused: {before}"
        config_changed = before[0] != after[0]
        result_changed = not _same_weights(before[1], after[1]) or before[2] != after[2]
        if not (config_changed and result_changed):
            ignored.append((flag, config_changed, result_changed))
    assert not ignored, f"--model {model}: options accepted but not used: {ignored}"
    # the audit means something only if each model takes some options and refuses others
    assert 0 < len(refused) < len(AUDIT)


def test_a_repeated_pairs_flag_adds_its_pairs_and_a_repeated_key_is_refused() -> None:
    argv = ["--dataset", "dsprites", "--dataset-opt", "size=32", "split_seed=1"]
    config = train_config(argv + ["--dataset-opt", "test_size=16"])
    assert dict(config.data.dataset_options) == {"size": 32, "split_seed": 1, "test_size": 16}
    with pytest.raises(PyroVAEError, match="size is given more than once"):
        train_config(
            ["--dataset", "dsprites", "--dataset-opt", "size=32", "--dataset-opt", "size=8"]
        )


# -- every option of every registered part ---------------------------------------------------------
#: the flags that choose a part of each family and set its options
PART_FLAGS = {
    "guide": ("--guide", "--guide-opt"),
    "prior": ("--prior", "--prior-opt"),
    "objective": ("--objective", "--objective-opt"),
    "likelihood": ("--likelihood", "--likelihood-opt"),
    "network": ("--network", "--network-opt"),
    "model": ("--model", "--model-opt"),
    "dataset": ("--dataset", "--dataset-opt"),
}
#: extra options a part needs to run on the audit's data (IWAE-type bounds need several particles)
PART_CONTEXT: dict[tuple[str, str], list[str]] = {
    ("objective", "renyi"): ["-k", "2"],
    ("objective", "iwae"): ["-k", "2"],
    ("objective", "dreg"): ["-k", "2"],
    ("dataset", "dsprites"): ["--dataset-opt", "size=32", "test_size=16"],
    # pixels of 0 and 1 lie on the grid of every bit depth
    ("likelihood", "discretized-logistic"): ["--binarize", "static"],
    ("likelihood", "logistic-mixture"): ["--binarize", "static"],
    **{("model", m): ["--labels", "6"] for m in ("m2", "m1m2", "adgm", "sdgm")},
}
#: (family, part) -> {option: (KEY=VALUE that changes it, extra context or [])}
PART_AUDIT: dict[tuple[str, str], dict[str, tuple[str, list[str]]]] = {
    ("guide", "diagonal"): {"min_scale": ("min_scale=0.5", [])},
    ("guide", "iaf"): {
        "num_flows": ("num_flows=1", []),
        "hidden": ("hidden=6", []),
        "stable": ("stable=false", []),
        "min_scale": ("min_scale=0.5", []),
    },
    ("guide", "lowrank"): {"rank": ("rank=1", []), "min_scale": ("min_scale=0.5", [])},
    ("guide", "planar"): {
        "num_flows": ("num_flows=2", []),
        "hidden": ("hidden=6", []),
        "min_scale": ("min_scale=0.5", []),
        "centred": ("centred=false", []),
    },
    ("guide", "radial"): {
        "num_flows": ("num_flows=2", []),
        "hidden": ("hidden=6", []),
        "min_scale": ("min_scale=0.5", []),
    },
    ("guide", "spline"): {
        "num_flows": ("num_flows=1", []),
        "hidden": ("hidden=6", []),
        "count_bins": ("count_bins=4", []),
        "bound": ("bound=2.0", []),
        "order": ("order=quadratic", []),
        "min_scale": ("min_scale=0.5", []),
    },
    ("guide", "sylvester"): {
        "num_flows": ("num_flows=2", []),
        "kind": ("kind=householder", []),
        "columns": ("columns=1", []),
        "num_householder": ("num_householder=1", ["--guide-opt", "kind=householder"]),
        "hidden": ("hidden=6", []),
        "min_scale": ("min_scale=0.5", []),
    },
    ("prior", "flow"): {
        "kind": ("kind=spline", []),
        "num_flows": ("num_flows=1", []),
        "hidden": ("hidden=6", []),
        "count_bins": ("count_bins=4", ["--prior-opt", "kind=spline"]),
        "bound": ("bound=2.0", ["--prior-opt", "kind=spline"]),
    },
    ("prior", "mixture"): {
        "components": ("components=3", []),
        "init_spread": ("init_spread=1.0", []),
    },
    ("prior", "vamp"): {
        "num_pseudo": ("num_pseudo=3", []),
        "init_mean": ("init_mean=0.5", []),
        "init_std": ("init_std=0.1", []),
        # pseudo-inputs drawn beyond [0, 1], where the bound clips them
        "bounded": ("bounded=false", ["--prior-opt", "init_std=2.0"]),
    },
    ("objective", "dipvae"): {
        "lambda_od": ("lambda_od=2", []),
        "lambda_d": ("lambda_d=5", []),
        "variant": ("variant=ii", []),
    },
    ("objective", "factorvae"): {
        "gamma": ("gamma=5", []),
        "disc_hidden": ("disc_hidden=8", []),
        "disc_lr": ("disc_lr=0.01", []),
    },
    ("objective", "renyi"): {"alpha": ("alpha=0.5", [])},
    ("objective", "tcvae"): {
        "alpha": ("alpha=0.5", []),
        "beta_tc": ("beta_tc=2", []),
        "gamma": ("gamma=0.5", []),
        "estimator": ("estimator=mss", []),
    },
    ("likelihood", "discretized-logistic"): {"bits": ("bits=5", [])},
    ("likelihood", "gaussian"): {
        "scale": ("scale=0.5", []),
        "learn_scale": ("learn_scale=true", []),
    },
    ("likelihood", "logistic-mixture"): {
        "components": ("components=2", []),
        "bits": ("bits=5", []),
        "coupling": ("coupling=false", []),
    },
    ("network", "pixelcnn"): {
        "channels": ("channels=8", []),
        "layers": ("layers=2", []),
        "kernel": ("kernel=3", []),
        "blocks": ("blocks=2", []),
        "levels": ("levels=1", []),
    },
    ("network", "resnet"): {
        "channels": ("channels=8", []),
        "blocks": ("blocks=2", []),
        "levels": ("levels=1", []),
    },
    ("model", "hvae"): {"latent_dim2": ("latent_dim2=3", []), "hidden2": ("hidden2=6", [])},
    ("dataset", "dsprites"): {
        "size": ("size=24", []),
        "test_size": ("test_size=8", []),
        "split_seed": ("split_seed=1", []),
    },
}
#: options that rightly leave the audit's result alone, and why
PART_EXEMPT: dict[str, str] = {
    "max_plate_nesting": "Pyro's bookkeeping of plate dimensions: the same value on any model whose "
    "plates it covers (a smaller one is refused by Pyro)",
    "data_plate": "names the plate that holds the data, for a user's model with another name",
}
#: the label models' options are the audit's own flags (--labels, --val-size, ... above)
_AUDITED_BY_FLAG = {
    ("model", m): "every option is a flag of AUDIT" for m in ("m2", "m1m2", "adgm", "sdgm")
}


def _part_options() -> list[tuple[str, str, str]]:
    from pyro_vae.cli import registry

    return [
        (kind, name, option)
        for kind in PART_FLAGS
        for name in registry(kind).names()
        for option in registry(kind).parameters(name)
        if option not in PART_EXEMPT and (kind, name) not in _AUDITED_BY_FLAG
    ]


def test_the_part_audit_covers_every_option_of_every_registered_part() -> None:
    listed = {(k, n, o) for (k, n), opts in PART_AUDIT.items() for o in opts}
    assert set(_part_options()) == listed


def test_the_label_models_options_are_flags_of_the_audit() -> None:
    from pyro_vae.cli import registry

    aliases = {o.flags[0].removeprefix("--").replace("-", "_") for o in options()}
    for _, name in _AUDITED_BY_FLAG:
        assert set(registry("model").parameters(name)) <= aliases | set(PART_EXEMPT), name


@pytest.mark.parametrize(
    "kind, name", sorted(PART_AUDIT), ids=[f"{k}-{n}" for k, n in sorted(PART_AUDIT)]
)
def test_no_option_of_a_part_is_silently_ignored(kind, name, files) -> None:
    choose, set_option = PART_FLAGS[kind]
    base = _base("vae", files) + [choose, name] + PART_CONTEXT.get((kind, name), [])
    baselines: dict[tuple[str, ...], object] = {}
    ignored = []
    for option, (value, context) in PART_AUDIT[(kind, name)].items():
        key = tuple(context)
        if key not in baselines:
            baselines[key] = _run(base + context)
        before = baselines[key]
        after = _run(base + context + [set_option, value])
        assert not isinstance(before, str), f"{name} {context} was refused: {before}"
        if isinstance(after, str):
            assert option in after, f"{name} {value}: refused without naming it: {after}"
            continue
        config_changed = before[0] != after[0]
        result_changed = not _same_weights(before[1], after[1]) or before[2] != after[2]
        if not (config_changed and result_changed):
            ignored.append((value, config_changed, result_changed))
    assert not ignored, f"{kind} {name}: options accepted but not used: {ignored}"


@pytest.mark.parametrize(
    "option", ["max_plate_nesting=0", "max_plate_nesting=-1", "max_plate_nesting=33"]
)
def test_pyros_plate_options_are_checked(option) -> None:
    with pytest.raises(PyroVAEError, match="max_plate_nesting must be a whole number in 1..32"):
        train_config(["--objective-opt", option])
    from pyro_vae.objectives import build_objective

    key, value = option.split("=")
    with pytest.raises(PyroVAEError, match="max_plate_nesting"):
        build_objective("iwae", 2, **{key: int(value)})
    with pytest.raises(PyroVAEError, match="data_plate must name"):
        build_objective("iwae", 2, data_plate=" ")
