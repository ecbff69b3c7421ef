"""Property-based fuzzing (hypothesis): random configurations and random data, through the CLI entry
point and the Python API. Every outcome is a success or a one-line error; never another exception,
never an "internal error" (exit status 1), never a traceback."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from pyro_vae import GUIDES, LIKELIHOODS, MODELS, OBJECTIVES, PRIORS, PyroVAEError, train
from pyro_vae.cli import main, options
from pyro_vae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from pyro_vae.data import Dataset

from .validation import one_line_outcome, python_outcome

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same cases on every run: a failure reproduces
)

#: values that are wrong for most options: wrong types, out of range, non-finite, empty
JUNK = st.sampled_from(
    ["-1", "0", "nan", "inf", "-inf", "1e309", "x", "", "1.5", "none", "true", str(2**70), "[]"]
)
SMALL_INTS = st.sampled_from(["1", "2", "3"])
NAMES = {
    "--model": MODELS.names(),
    "--guide": GUIDES.names(),
    "--prior": PRIORS.names(),
    "--objective": OBJECTIVES.names(),
    "--likelihood": LIKELIHOODS.names(),
    "--network": ["mlp", "conv"],
    "--activation": ["relu", "tanh", "swish"],
    "--binarize": ["none", "dynamic", "static", "half"],
    "--dataset": ["digits", "no/such/file.npz", "{garbage}", "nope"],
    "--device": ["cpu", "auto", "cuda", "mps", "meta", "cuda:7", "tpu"],
}
KEYS = ["rank", "num_flows", "centred", "components", "num_pseudo", "scale", "learn_scale"]
KEYS += ["alpha", "data_plate", "max_plate_nesting", "min_scale", "kind", "zzz", "latent_dim"]
#: options kept small when valid, so that an accepted configuration trains in a moment
BOUNDED = {"--epochs", "--latent-dim", "--latent-dim2", "--particles", "--eval-particles"}
BOUNDED |= {"--flows", "--labels", "--val-size", "--m1-epochs", "--kl-anneal"}


@st.composite
def option_values(draw, opt) -> list[str]:
    flag = opt.flags[0]
    if opt.metavar == "KEY=VALUE":
        pairs = draw(st.lists(st.tuples(st.sampled_from(KEYS), JUNK | SMALL_INTS), max_size=2))
        return [flag, *[f"{k}={v}" for k, v in pairs]] if pairs else []
    if flag in NAMES:
        return [flag, draw(st.sampled_from(NAMES[flag]))]
    if flag in BOUNDED:
        return [flag, draw(SMALL_INTS | JUNK)]
    if flag == "--hidden":
        return [flag, *draw(st.lists(st.sampled_from(["8", "0", "-3", "x", "4.0"]), max_size=2))]
    if flag == "--data-dir":
        return [flag, draw(st.sampled_from(["/nonexistent", "{tmp}"]))]
    return [flag, draw(JUNK | st.sampled_from(["0.5", "1", "2", "16", "0.001"]))]


@st.composite
def command_lines(draw) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(options()), max_size=4, unique_by=lambda o: o.target))
    argv = []
    for opt in chosen:
        argv += draw(option_values(opt))
    return argv


_one_line_outcome = one_line_outcome


def _launches_processes(argv: list[str]) -> bool:
    """Whether ``argv`` holds a valid ``--devices N`` or ``--num-nodes N`` (N >= 2): Fabric would
    start this process again as rank 1, which in a test process re-runs pytest itself (the
    2-process runs are tested from a command, in tests/test_distributed.py)."""
    for flag in ("--devices", "--num-nodes"):
        if flag in argv[:-1]:
            value = argv[argv.index(flag) + 1]
            if value.strip().lstrip("+").isdigit() and int(value) >= 2:
                return True
    return False


def _train_cli(argv: list[str], tmp: Path, capsys) -> None:
    """``pyro-vae train`` at a tiny size with ``argv`` appended (placeholders filled in)."""
    assume(not _launches_processes(argv))
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip")
    argv = [a.format(tmp=tmp, garbage=tmp / "garbage.npz") for a in argv]
    base = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--batch-size", "512"]
    code = main([*base, *argv, "--run-dir", str(tmp / "run"), "--no-progress", "--no-plots"])
    _one_line_outcome(code, capsys.readouterr().err)


@FUZZ
@given(argv=command_lines())
def test_random_command_lines_succeed_or_fail_in_one_line(argv, tmp_path_factory, capsys) -> None:
    _train_cli(argv, tmp_path_factory.mktemp("fuzz"), capsys)


@pytest.mark.parametrize("flag", [o.flags[0] for o in options()])
@settings(FUZZ, max_examples=6)
@given(data=st.data())
def test_each_option_with_random_values(flag, data, tmp_path_factory, capsys) -> None:
    """Every option, one at a time, with junk and plausible values: so that no option's bad value
    escapes the random combinations above."""
    opt = next(o for o in options() if o.flags[0] == flag)
    argv = data.draw(option_values(opt) | st.tuples(JUNK).map(lambda v: [flag, v[0]]))
    _train_cli(argv, tmp_path_factory.mktemp("fuzzopt"), capsys)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2)
    ),
    max_leaves=4,
)


@st.composite
def config_files(draw) -> object:
    fields = {
        "data": ["dataset", "binarize", "test_fraction", "data_dir"],
        "model": ["model", "latent_dim", "hidden", "guide", "guide_options", "latent_dim2"],
        "train": ["epochs", "lr", "objective", "seed", "labels", "objective_options", "beta"],
    }
    if draw(st.booleans()):
        return draw(JSON_VALUES)  # not even an object of sections
    out: dict = {}
    for section, names in fields.items():
        if draw(st.booleans()):
            keys = draw(st.lists(st.sampled_from([*names, "bogus"]), max_size=3, unique=True))
            out[section] = {k: draw(JSON_VALUES) for k in keys}
    return out


@FUZZ
@given(content=config_files())
def test_random_config_files_succeed_or_fail_in_one_line(content, tmp_path_factory, capsys) -> None:
    tmp = tmp_path_factory.mktemp("fuzzcfg")
    (tmp / "config.json").write_text(json.dumps(content))
    base = ["train", "--config", str(tmp / "config.json"), "--epochs", "1", "--hidden", "8"]
    base += ["--latent-dim", "2", "--run-dir", str(tmp / "run"), "--no-progress", "--no-plots"]
    _one_line_outcome(main(base), capsys.readouterr().err)


_python_outcome = python_outcome


# weighted towards good data, so that successes are part of the corpus too
ARRAY_SHAPES = st.sampled_from([(0, 1, 4, 4), (6, 0, 4), (6,)]) | st.sampled_from(
    [(6, 1, 4, 4), (6, 16), (5, 1, 4, 4)]
)
FILLS = st.sampled_from(["nan", "inf", "negative", "big", "ints"]) | st.sampled_from(
    ["uniform", "binary"]
)
LABELS = st.sampled_from(
    ["short", "float", "nan", "negative", "huge", "2d", "string", "bool"]
) | st.sampled_from(["none", "ok"])


def _array(shape: tuple[int, ...], fill: str, rng: np.random.Generator) -> np.ndarray:
    x = rng.random(shape).astype(np.float32)
    if fill == "binary":
        x = x.round()
    elif fill == "nan" and x.size:
        x.flat[0] = np.nan
    elif fill == "inf" and x.size:
        x.flat[-1] = np.inf
    elif fill == "negative":
        x = x - 0.5
    elif fill == "big":
        x = x * 1e30
    elif fill == "ints":
        x = (x * 255).astype(np.int64)
    return x


def _labels(kind: str, n: int, rng: np.random.Generator):
    y = np.arange(n) % 3
    return {
        "none": None,
        "ok": y,
        "short": y[:-1],
        "float": y + 0.5,
        "nan": np.where(y == 0, np.nan, y),
        "negative": y - 1,
        "huge": np.where(y == 0, 1e9, y),
        "2d": np.stack([y, y], 1),
        "string": y.astype(str),
        "bool": y.astype(bool),
    }[kind]


@FUZZ
@given(
    shape=ARRAY_SHAPES,
    fill=FILLS,
    labels=LABELS,
    model=st.sampled_from(["vae", "m2", "cvae"]),
    seed=st.integers(0, 3),
)
def test_random_arrays_through_a_file_and_the_python_api(
    shape, fill, labels, model, seed, tmp_path_factory, capsys
) -> None:
    rng = np.random.default_rng(seed)
    tmp = tmp_path_factory.mktemp("fuzzdata")
    x = _array(shape, fill, rng)
    y = _labels(labels, shape[0], rng)
    arrays = {"x": x} if y is None else {"x": x, "y": y}
    np.savez(tmp / "data.npz", **arrays)
    argv = ["train", "--dataset", str(tmp / "data.npz"), "--model", model, "--epochs", "1"]
    argv += ["--hidden", "8", "--latent-dim", "2", "--batch-size", "4", "--no-progress"]
    argv += ["--no-plots", "--run-dir", str(tmp / "run")]
    if model == "m2":
        argv += ["--labels", "3", "--val-size", "0"]
    _one_line_outcome(main(argv), capsys.readouterr().err)

    # the same arrays as a Dataset built in Python
    def python_api() -> None:
        xt = torch.as_tensor(x)
        yt = None
        if y is not None and y.dtype.kind in "iufb":
            yt = torch.as_tensor(y)
        n_test = max(1, shape[0] // 3) if shape[0] else 0
        ds = Dataset(
            "fuzz",
            xt[n_test:],
            xt[:n_test],
            None if yt is None else yt[n_test:],
            None if yt is None else yt[:n_test],
            num_classes=None if yt is None else 3,
        )
        config = RunConfig(
            data=DataConfig("digits"),
            model=ModelConfig(
                model,
                latent_dim=2,
                hidden=(8,),
                model_options={"labels": 3} if model == "m2" else {},
            ),
            train=TrainConfig(epochs=1, batch_size=4, device="cpu"),
        )
        result = train(config, progress=False, dataset=ds)
        assert all(math.isfinite(r["test_elbo"]) for r in result.history)

    _python_outcome(python_api)


def test_the_fuzz_corpus_is_not_empty_and_includes_successes(tmp_path, capsys) -> None:
    """A fuzz test that only ever saw errors would prove little: a plain run succeeds here."""
    argv = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]
    assert main([*argv, "--no-plots", "--run-dir", str(tmp_path / "r")]) == 0
    assert Path(tmp_path / "r" / "checkpoint.pt").exists()
    capsys.readouterr()


@pytest.mark.parametrize("model", ["vae", "m2"])
def test_a_python_dataset_with_bad_values_is_one_line(model) -> None:
    x = torch.rand(12, 1, 4, 4)
    x[0, 0, 0, 0] = float("nan")
    ds = Dataset("bad", x[:8], x[8:], torch.arange(8) % 3, torch.arange(4) % 3, num_classes=3)
    config = RunConfig(
        model=ModelConfig(
            model,
            latent_dim=2,
            hidden=(8,),
            model_options={"labels": 3} if model == "m2" else {},
        ),
        train=TrainConfig(epochs=1, device="cpu"),
    )
    with pytest.raises(PyroVAEError) as e:
        train(config, progress=False, dataset=ds)
    assert "\n" not in str(e.value)


# -- the Python API ------------------------------------------------------------------------------------
_API_MODEL: dict = {}


def _api_model():
    if "vae" not in _API_MODEL:
        from pyro_vae import ModelConfig, build_model

        torch.manual_seed(0)
        _API_MODEL["vae"] = build_model(ModelConfig(latent_dim=2, hidden=(8,)), (1, 4, 4), None)
    return _API_MODEL["vae"]


API_SHAPES = st.sampled_from([(3, 1, 4, 4), (1, 1, 4, 4), (2, 16), (16,), (0, 1, 4, 4)]) | (
    st.sampled_from([(1, 4, 4), (2, 1, 4, 4, 1), (2, 2, 4, 4), ()])
)
API_DTYPES = st.sampled_from(["float32", "float64", "float16", "int64", "uint8", "bool"])
API_FILLS = st.sampled_from(["uniform", "binary", "nan", "inf", "big", "negative"])
API_CONTAINERS = st.sampled_from(["tensor", "numpy"]) | st.sampled_from(["list", "none", "str"])
API_COUNTS = st.sampled_from([1, 2, 3]) | st.sampled_from([0, -1, 2.5, True, "2", None])


def _api_data(shape, dtype, fill, container):
    if container == "none":
        return None
    if container == "str":
        return "images.npy"
    x = torch.rand(shape)
    if fill == "binary":
        x = x.round()
    elif fill == "nan" and x.numel():
        x.view(-1)[0] = float("nan")
    elif fill == "inf" and x.numel():
        x.view(-1)[-1] = float("inf")
    elif fill == "big":
        x = x * 1e6
    elif fill == "negative":
        x = x - 0.5
    if dtype in ("int64", "uint8", "bool"):
        x = torch.nan_to_num(x, nan=0.0, posinf=1.0).clamp(-1, 255).round()
        x = x.to(getattr(torch, dtype)) if dtype != "uint8" else x.clamp(0, 255).to(torch.uint8)
    else:
        x = x.to(getattr(torch, dtype))
    if container == "numpy":
        return x.numpy()
    if container == "list":
        return x.tolist()
    return x


API_JUNK = st.sampled_from(
    [None, "vae", 3, [], {"train": {"epochs": -1}}, {"model": []}, b"run", 1.5, torch.ones(2)]
)


@FUZZ
@given(
    args=st.tuples(API_JUNK, API_JUNK, st.sampled_from(["config", "model", "dataset", "run_dir"]))
)
def test_random_train_and_load_run_arguments_fail_in_one_line(args, tmp_path_factory) -> None:
    """pv.train and pv.load_run with arguments of every wrong type: a one-line PyroVAEError."""
    from pyro_vae import load_run

    junk, other, slot = args
    tiny = RunConfig(model=ModelConfig(latent_dim=2, hidden=(8,)), train=TrainConfig(epochs=1))
    kwargs = {"config": tiny, "progress": False, slot: junk}
    config = kwargs.pop("config")
    with contextlib.chdir(tmp_path_factory.mktemp("fuzzapi")):  # run_dir="vae" is written here
        _python_outcome(lambda: train(config, **kwargs))
        _python_outcome(lambda: load_run(other))


@FUZZ
@given(
    fn=st.sampled_from(["log_likelihood", "elbo", "encode", "latent_statistics", "score"]),
    shape=API_SHAPES,
    dtype=API_DTYPES,
    fill=API_FILLS,
    container=API_CONTAINERS,
    count=API_COUNTS,
)
# found by a longer randomised run: a count of 0, -1 or "2" reached Pyro's plate unchecked
@example("latent_statistics", (3, 1, 4, 4), "float32", "uniform", "tensor", 0)
@example("latent_statistics", (3, 1, 4, 4), "float32", "uniform", "tensor", -1)
@example("latent_statistics", (3, 1, 4, 4), "float32", "uniform", "tensor", "2")
def test_random_python_api_arguments_succeed_or_fail_in_one_line(
    fn, shape, dtype, fill, container, count
) -> None:
    """pv.log_likelihood, pv.elbo, encode, latent_statistics and score with random containers,
    dtypes, shapes, values and sample counts: a finite result of one row per datum, or a one-line
    PyroVAEError; never NaN, never a positive log p(x) for data a Bernoulli cannot produce."""
    from pyro_vae import elbo, log_likelihood
    from pyro_vae.evaluate import latent_statistics
    from pyro_vae.represent import encode
    from pyro_vae.scores import score

    vae = _api_model()
    x = _api_data(shape, dtype, fill, container)

    def call() -> None:
        if fn == "log_likelihood":
            out = log_likelihood(vae, x, count)
            assert out.shape == (shape[0],) and torch.isfinite(out).all() and (out <= 0).all()
        elif fn == "elbo":
            assert math.isfinite(elbo(vae, x, num_particles=count))
        elif fn == "encode":
            assert np.isfinite(encode(vae, x, scale_samples=count)["mean"]).all()
        elif fn == "latent_statistics":
            assert math.isfinite(latent_statistics(vae, x, count)["rate"])
        else:
            table = score(vae, x, num_samples=count, scores=("elbo", "log_px"))
            assert all(np.isfinite(np.asarray(v)).all() for v in table.values())

    _python_outcome(call)


# -- damaged checkpoints: the structure, not only the bytes ----------------------------------------------
_BASE_RUN: dict = {}


def _base_run(tmp_path_factory, model: str = "vae") -> Path:
    """A trained run of ``model`` (M2's checkpoint holds a plan state and a selected model)."""
    if model not in _BASE_RUN:
        run = tmp_path_factory.mktemp(f"fuzzckpt-{model}") / "run"
        argv = ["train", "--epochs", "1", "--hidden", "8", "--latent-dim", "2", "--no-progress"]
        argv += ["--model", model] + (["--labels", "100"] if model == "m2" else [])
        assert main([*argv, "--no-plots", "--run-dir", str(run)]) == 0
        _BASE_RUN[model] = run
    return _BASE_RUN[model]


JUNK_VALUES = st.sampled_from(
    [
        None,
        -1,
        0,
        2**40,
        "x",
        [],
        [1, 2],
        {},
        {"x": 1},
        torch.ones(3),
        torch.full((2,), float("nan")),
        torch.ones(2, dtype=torch.uint8),
        torch.zeros(0),
        torch.full((3,), 1e38),
        1.5,
        True,
    ]
)
CONFIG_JUNK = st.sampled_from([None, -5, 0, 10**9, "x", [], {}, [10**9], 1e308, True])


def _entries(payload: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a checkpoint's nested dicts and lists."""
    out = []
    items = payload.items() if isinstance(payload, dict) else enumerate(payload)
    for key, value in items:
        path = (*prefix, key)
        out.append(path)
        if isinstance(value, dict | list) and len(path) < 4:
            out.extend(_entries(value, path))
    return out


@st.composite
def damages(draw) -> tuple:
    kind = draw(st.sampled_from(["replace", "delete", "config", "scale", "config-text"]))
    config_junk = draw(JSON_VALUES if kind == "config-text" else CONFIG_JUNK)
    return kind, draw(st.integers(0, 10**6)), draw(JUNK_VALUES), config_junk


def _damage(ckpt: dict, damage: tuple) -> str:
    kind, pick, junk, config_junk = damage
    if kind == "config-text":  # a configuration that is not even an object of sections
        ckpt["config"] = json.dumps(config_junk)
        return f"config-text {config_junk!r}"
    if kind == "config":
        config = json.loads(ckpt["config"])
        section = sorted(config)[pick % len(config)]
        key = sorted(config[section])[pick // 7 % len(config[section])]
        config[section][key] = config_junk
        ckpt["config"] = json.dumps(config)
        return f"config.{section}.{key}={config_junk!r}"
    paths = [p for p in _entries(ckpt) if p[0] not in ("format", "version")]
    path = paths[pick % len(paths)]
    parent = ckpt
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif kind == "scale" and isinstance(parent[path[-1]], torch.Tensor):
        t = parent[path[-1]]
        parent[path[-1]] = t * 1e30 if t.is_floating_point() else t[:1]  # huge weights
    else:
        parent[path[-1]] = junk
    return f"{kind} {'.'.join(map(str, path))}"


@FUZZ
@given(
    damage=damages(),
    command=st.sampled_from(["resume", "evaluate", "sample", "encode", "load_run"]),
    model=st.sampled_from(["vae", "m2"]),
)
def test_random_damaged_checkpoints_fail_in_one_line(
    damage, command, model, tmp_path_factory, capsys
) -> None:
    """A checkpoint that loads but whose entries are missing, of the wrong type, of the wrong shape,
    huge, or whose configuration holds junk: every command is a success or one line, and the Python
    API a PyroVAEError."""
    import shutil

    from pyro_vae import load_run

    tmp = tmp_path_factory.mktemp("fuzzckpt")
    run = tmp / "run"
    shutil.copytree(_base_run(tmp_path_factory, model), run)
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    event(_damage(ckpt, damage).split(" ")[0])
    torch.save(ckpt, run / "checkpoint.pt")
    if command == "load_run":
        _python_outcome(lambda: load_run(run))
        return
    argv = {
        "resume": [
            "train",
            "--run-dir",
            str(run),
            "--resume",
            "--epochs",
            "2",
            "--no-progress",
            "--no-plots",
        ],  # fmt: skip
        "evaluate": ["evaluate", str(run), "--nll-samples", "4", "--iwae-samples", "2"],
        "sample": ["sample", str(run), "-n", "4"],
        "encode": ["encode", str(run), "--out", str(tmp / "z.npz")],
    }[command]
    _one_line_outcome(main(argv), capsys.readouterr().err)
