"""The Python API in Python words: pv.train's keyword options, run directories (overwrite, resume,
none), figures, errors that name arguments, model objects recorded as what they are and reloaded in
a fresh process, and the parameter-store clash."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyro_vae as pv
from pyro_vae.checkpoint import load_checkpoint

from .conftest import REPO

SMALL = dict(epochs=1, batch_size=256, device="cpu", progress=False)


def _run(code: str, tmp_path, extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), extra_path) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_model_built_in_python_is_recorded_truthfully_and_reloads_alone(tmp_path) -> None:
    """The must-show: non-default parts, trained with pv.train, config.json says what they are and
    pv.load_run(run) rebuilds the model in a fresh process with nothing else."""
    vae = pv.VAE(
        (1, 8, 8),
        latent_dim=7,
        hidden=(16,),
        activation="tanh",
        guide="iaf",
        guide_options={"num_flows": 2},
        prior="vamp",
        prior_options={"num_pseudo": 5},
        likelihood="continuous-bernoulli",
    )
    run = tmp_path / "run"
    result = pv.train(vae, "digits", run_dir=run, **SMALL)
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["model"], model["latent_dim"], model["guide"], model["prior"]) == (
        "vae",
        7,
        "iaf",
        "vamp",
    )
    assert model["hidden"] == [16] and model["activation"] == "tanh"
    assert model["likelihood"] == "continuous-bernoulli"
    assert model["guide_options"] == {"num_flows": 2}
    assert model["prior_options"] == {"num_pseudo": 5}
    torch.save(result.model.state_dict(), tmp_path / "trained.pt")
    out = _run(
        f"""
        import torch, pyro_vae as pv
        config, model, data = pv.load_run({str(run)!r})
        trained = torch.load({str(tmp_path / "trained.pt")!r})
        assert type(model).__name__ == "VAE" and model.latent_dim == 7
        assert type(model.q).__name__ == "InverseAutoregressiveFlow"
        assert type(model.prior).__name__ == "VampPrior"
        assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
        print("rebuilt", config.model.guide, config.model.prior, config.model.latent_dim)
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "rebuilt iaf vamp 7" in out.stdout


USER_MODULE = '''
import pyro_vae as pv


class TwoLayerVAE(pv.VAE):
    """A user's model in an importable module: described by import path and arguments."""

    def __init__(self, x_shape, latent_dim=2, *, width=16):
        super().__init__(x_shape, latent_dim, hidden=(width, width))
        self.width = width
'''


def test_a_user_class_is_recorded_by_import_path_and_reloads(tmp_path, monkeypatch) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "usermodels.py").write_text(USER_MODULE)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        m.syspath_prepend(str(tmp_path / "mine"))
        from usermodels import TwoLayerVAE

        pv.train(TwoLayerVAE((1, 8, 8), 3, width=12), run_dir=run, **SMALL)
    sys.modules.pop("usermodels")  # as in a process that cannot import it
    spec = json.loads((run / "model.json").read_text())
    assert spec["class"] == "usermodels:TwoLayerVAE"
    assert spec["args"] == {"x_shape": [1, 8, 8], "latent_dim": 3, "width": 12}
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["model"] == "custom:usermodels.TwoLayerVAE" and model["latent_dim"] == 3
    assert model["hidden"] == [12, 12]  # what it gave pv.VAE's constructor
    assert model["model_options"] == {"width": 12}
    out = _run(
        f"""
        import pyro_vae as pv
        import usermodels  # the user's own module: loading a run never imports what it names
        config, model, data = pv.load_run({str(run)!r})
        print(type(model).__name__, model.width, model.latent_dim)
        """,
        tmp_path,
        str(tmp_path / "mine"),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TwoLayerVAE", "12", "3"]
    # where the module is not importable, the error says so, and model= still works
    with pytest.raises(pv.CheckpointError, match=r"usermodels:TwoLayerVAE.*is not imported"):
        pv.load_run(run)
    _, model, _ = pv.load_run(run, model=pv.VAE((1, 8, 8), 3, hidden=(12, 12)))
    assert type(model) is pv.VAE


def test_a_class_defined_in_a_script_is_named_at_reload(tmp_path) -> None:
    run = tmp_path / "run"
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import pyro_vae as pv

            class Mine(pv.VAE):
                pass

            pv.train(Mine((1, 8, 8), 2, hidden=(8,)), run_dir={str(run)!r}, epochs=1,
                     batch_size=256, device="cpu", progress=False)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with pytest.raises(pv.CheckpointError, match=r"class Mine is defined in the script being run"):
        pv.load_run(run)
    _, model, _ = pv.load_run(run, model=pv.VAE((1, 8, 8), 2, hidden=(8,)))
    assert model.latent_dim == 2


def test_parts_passed_as_objects_inside_a_model_are_recorded(tmp_path) -> None:
    guide = pv.guides.LowRankNormal(16, 3, rank=2)
    vae = pv.VAE((1, 8, 8), 3, hidden=(16,), guide=guide)
    pv.train(vae, run_dir=tmp_path / "run", **SMALL)
    model = load_checkpoint(tmp_path / "run")["config"].model
    assert (model.guide, model.guide_options["rank"]) == ("lowrank", 2)
    _, again, _ = pv.load_run(tmp_path / "run")
    assert type(again.q) is pv.guides.LowRankNormal and again.q.rank == 2


def test_no_run_directory_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    vae = pv.VAE((1, 8, 8), 2, hidden=(8,))
    result = pv.train(vae, **SMALL)
    assert result.run_dir is None and list(tmp_path.iterdir()) == []
    with pytest.raises(pv.ConfigError, match=r"takes no option nope; its training options are"):
        pv.train(vae, nope=1, **SMALL)
    with pytest.raises(pv.ConfigError, match=r"^overwrite must be True or False, got 'yes'"):
        pv.train(vae, overwrite="yes", **SMALL)
    with pytest.raises(pv.ConfigError, match=r"resume=True continues the run, overwrite=True"):
        pv.train(vae, run_dir=tmp_path / "r", resume=True, overwrite=True, **SMALL)


def test_keyword_options_replace_the_configurations(tmp_path) -> None:
    config = pv.RunConfig(train=pv.TrainConfig(epochs=5, batch_size=64))
    vae = pv.VAE((1, 8, 8), 2, hidden=(8,))
    result = pv.train(vae, config=config, epochs=1, lr=3e-3, seed=4, beta=0.5, progress=False)
    t = result.config.train
    assert (t.epochs, t.batch_size, t.lr, t.seed, t.beta) == (1, 64, 3e-3, 4, 0.5)
    assert len(result.history) == 1


def test_an_existing_run_names_resume_and_overwrite(tmp_path) -> None:
    run = tmp_path / "run"
    first = pv.train(pv.VAE((1, 8, 8), 2, hidden=(8,)), run_dir=run, **SMALL)
    (run / "notes.txt").write_text("mine")
    before = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(pv.ConfigError, match=r"pass resume=True to continue it, overwrite=True"):
        pv.train(pv.VAE((1, 8, 8), 2, hidden=(8,)), run_dir=run, **SMALL)
    assert (run / "checkpoint.pt").read_bytes() == before
    second = pv.train(pv.VAE((1, 8, 8), 3, hidden=(8,)), run_dir=run, overwrite=True, **SMALL)
    assert load_checkpoint(run)["config"].model.latent_dim == 3
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files were replaced
    assert first.model.latent_dim == 2 and second.model.latent_dim == 3
    # resume with the run's own configuration: nothing but the run directory and epochs
    resumed = pv.train(run_dir=run, resume=True, epochs=2, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2] and resumed.model.latent_dim == 3
    with pytest.raises(pv.ConfigError, match=r"epochs=1 would go back"):
        pv.train(run_dir=run, resume=True, epochs=1, progress=False)


def test_plots_draws_the_figures(tmp_path) -> None:
    result = pv.train(
        pv.VAE((1, 8, 8), 2, hidden=(8,)), run_dir=tmp_path / "r", plots=True, **SMALL
    )
    assert result.figures and all(p.exists() and p.suffix == ".png" for p in result.figures)
    assert {p.name for p in result.figures} >= {"training_curves.png", "samples.png"}
    with pytest.raises(pv.ConfigError, match=r"plots=True draws into run_dir/figures"):
        pv.train(pv.VAE((1, 8, 8), 2, hidden=(8,)), plots=True, **SMALL)


def test_the_old_call_order_still_works(tmp_path) -> None:
    config = pv.RunConfig(train=pv.TrainConfig(epochs=1, batch_size=256, device="cpu"))
    result = pv.train(config, tmp_path / "run", progress=False)
    assert result.run_dir == tmp_path / "run" and (tmp_path / "run" / "config.json").exists()
    result = pv.train(config, "digits", progress=False)  # a data set's name is data
    assert result.run_dir is None and result.config.data.dataset == "digits"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ("--epochs must be a positive integer, got 0", "epochs must be a positive integer, got 0"),
        ("has trained 3 epochs; --epochs 2 would go back", "3 epochs; epochs=2 would go back"),
        ("pass --resume to continue it", "pass resume=True to continue it"),
        ("choose another --run-dir", "choose another run_dir"),
        ("import it with --import MODULE", "import it with pyro_vae.import_plugin(MODULE)"),
        ("--run-dir runs/x is a file", "run_dir='runs/x' is a file"),
        ("set it with --guide-opt rank=VALUE", "set it with guide_options={'rank': VALUE}"),
        ("pass --flows 3", "pass guide_options={'num_flows': 3}"),
        ("use --device cpu", "use device='cpu'"),
        ("--kl-anneal-start needs --kl-anneal EPOCHS", "kl_anneal_start needs kl_anneal=EPOCHS"),
        ("the --out file", "the --out file"),  # not an argument of the Python API: kept
    ],
)
def test_flags_are_put_in_python_words(flags, words) -> None:
    from pyro_vae.api import python_words

    assert words in python_words(flags)


def test_errors_through_the_python_api_name_arguments() -> None:
    vae = pv.VAE((1, 8, 8), 2, hidden=(8,))
    with pytest.raises(pv.ConfigError, match=r"^batch_size must be a positive integer") as e:
        pv.train(vae, batch_size=0, **{k: v for k, v in SMALL.items() if k != "batch_size"})
    assert "--" not in str(e.value)
    with pytest.raises(pv.ConfigError, match=r"^lr must be positive"):
        pv.train(vae, lr=-1.0, progress=False)


def test_help_documents_every_field_and_the_renamed_flags() -> None:
    for cls in (pv.DataConfig, pv.ModelConfig, pv.TrainConfig):
        doc = cls.__doc__
        for f in dataclasses.fields(cls):
            assert f"``{f.name}``" in doc, (cls.__name__, f.name)
    assert "``--flows`` sets ``guide_options={'num_flows': ...}``" in pv.ModelConfig.__doc__
    assert "``--alpha`` sets ``objective_options={'alpha': ...}``" in pv.TrainConfig.__doc__
    assert "[--particles, -k]" in pv.TrainConfig.__doc__


class _Named(nn.Module):
    """A user's Pyro pair that registers itself under a fixed name."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(64, 4)
        self.dec = nn.Linear(2, 64)

    def model(self, x):
        pyro.module("mine", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample(
                "x", dist.ContinuousBernoulli(logits=self.dec(z)).to_event(1), obs=x.flatten(1)
            )

    def guide(self, x):
        pyro.module("mine", self)
        h = self.enc(x.flatten(1))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(h[:, :2], h[:, 2:].exp()).to_event(1))


def test_a_parameter_store_clash_is_an_error_naming_it() -> None:
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    a, b = _Named(), _Named()
    SVI(a.model, a.guide, pyro.optim.Adam({}), Trace_ELBO()).step(torch.rand(4, 1, 8, 8))
    with pytest.raises(pv.ConfigError, match=r"maps 'mine\$\$\$enc.weight' to a tensor of another"):
        pv.train(b, **SMALL)
    pyro.clear_param_store()
    before = {k: v.detach().clone() for k, v in b.state_dict().items()}
    pv.train(b, **SMALL)  # alone in the store, it trains
    assert all(not torch.equal(before[k], v) for k, v in b.state_dict().items())


def test_elbo_takes_functions_with_guide_like_log_likelihood() -> None:
    pyro.set_rng_seed(0)
    pair = _Named()
    x = torch.rand(16, 1, 8, 8)
    pyro.set_rng_seed(1)
    by_object = pv.elbo(pair, x, num_particles=4)
    pyro.set_rng_seed(1)
    by_functions = pv.elbo(pair.model, x, num_particles=4, guide=pair.guide)
    assert by_object == by_functions
    with pytest.raises(pv.ConfigError, match="needs a callable Pyro model and guide"):
        pv.elbo(pair.model, x, guide=3)


def test_encode_and_score_take_functions_with_guide_like_objects() -> None:
    from pyro_vae.represent import encode
    from pyro_vae.scores import score

    pair = _Named()
    x = torch.rand(16, 1, 8, 8)
    enc = encode(pair.model, x, guide=pair.guide)
    h = pair.enc(x.flatten(1)).detach()
    torch.testing.assert_close(torch.as_tensor(enc["mean"]), h[:, :2])
    torch.testing.assert_close(torch.as_tensor(enc["scale"]), h[:, 2:].exp())
    by_functions = score(pair.model, x, guide=pair.guide, scores=["elbo"], elbo_samples=4)
    by_object = score(pair, x, scores=["elbo"], elbo_samples=4)
    np.testing.assert_array_equal(by_functions["elbo"], by_object["elbo"])


def test_a_run_recorded_before_descriptions_still_loads_with_model(tmp_path) -> None:
    """Runs of model objects from before models described themselves name only the class; they
    reload into model=, and without it the error says so."""
    run = tmp_path / "run"
    result = pv.train(pv.VAE((1, 8, 8), 2, hidden=(8,)), run_dir=run, **SMALL)
    raw = torch.load(run / "checkpoint.pt", weights_only=True)
    del raw["model_description"]
    config = json.loads(raw["config"])
    config["model"] = {"model": "custom:pyro_vae.models.vae.VAE"}  # what 0.1 wrote
    raw["config"] = json.dumps(config)
    torch.save(raw, run / "checkpoint.pt")
    with pytest.raises(pv.CheckpointError, match=r"load_run\(RUN, model=\.\.\.\)"):
        pv.load_run(run)
    _, model, _ = pv.load_run(run, model=pv.VAE((1, 8, 8), 2, hidden=(8,)))
    assert all(torch.equal(v, result.model.state_dict()[k]) for k, v in model.state_dict().items())
    resumed = pv.train(
        pv.VAE((1, 8, 8), 2, hidden=(8,)), run_dir=run, resume=True, **SMALL | {"epochs": 2}
    )
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_elbo_takes_an_object_that_is_not_a_module() -> None:
    net = _Named()

    class Pair:  # model and guide as methods of a plain object
        def model(self, x):
            return net.model(x)

        def guide(self, x):
            return net.guide(x)

    x = torch.rand(16, 1, 8, 8)
    pyro.set_rng_seed(2)
    plain = pv.elbo(Pair(), x, num_particles=3)
    pyro.set_rng_seed(2)
    assert plain == pv.elbo(net, x, num_particles=3)


def test_the_python_api_trains_exactly_what_the_command_line_trains() -> None:
    from pyro_vae.cli import train_config
    from pyro_vae.train import train as cli_train

    argv = ["--epochs", "1", "--batch-size", "256", "--hidden", "8", "--latent-dim", "2"]
    argv += ["--guide", "iaf", "--prior", "vamp", "--device", "cpu", "--seed", "5"]
    by_cli = cli_train(train_config(argv), progress=False).model.state_dict()
    config = pv.RunConfig(
        model=pv.ModelConfig(latent_dim=2, hidden=(8,), guide="iaf", prior="vamp"),
    )
    by_python = pv.train(config, epochs=1, batch_size=256, device="cpu", seed=5, progress=False)
    assert by_cli.keys() == by_python.model.state_dict().keys()
    assert all(torch.equal(v, by_python.model.state_dict()[k]) for k, v in by_cli.items())
    # a model object built under the same seed trains to the same weights, run after run
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(1)
        vae = pv.VAE((1, 8, 8), 2, hidden=(8,), guide="iaf")
        runs.append(pv.train(vae, seed=5, **SMALL).model.state_dict())
    assert all(torch.equal(v, runs[1][k]) for k, v in runs[0].items())
