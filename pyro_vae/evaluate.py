"""Evaluation: per-image bounds on log p(x) over a data set."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from pyro.infer import ELBO, Trace_ELBO
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from .boundary import as_data, check_count, finite_result
from .errors import ConfigError
from .objectives.importance import (
    DATA_PLATE,
    check_per_datum,
    data_dim,
    data_frame,
    importance_traces,
    per_datum,
    site_log_prob,
    trace_log_weights,
)
from .objectives.kl import closed_form_kl, closed_form_kl_sites, per_dimension_kl


@torch.no_grad()
def elbo(
    model: nn.Module,
    x: torch.Tensor,
    num_particles: int = 1,
    batch_size: int = 1024,
    objective: ELBO | None = None,
) -> float:
    """The mean ELBO per data point (nats; higher is better), in batches, without gradients.

    ``model`` is anything with Pyro ``model(x)`` and ``guide(x)`` methods whose data plate is named
    ``data``. ``objective`` defaults to the Monte Carlo ELBO with ``num_particles`` particles.
    """
    from .models import Model

    _model_and_guide(model, None, "elbo")
    x = as_data(model, x, "elbo")
    num_particles = check_count(num_particles, "elbo: num_particles")
    batch_size = check_count(batch_size, "elbo: batch_size")
    if objective is None and isinstance(model, Model):
        objective = model.evaluation_objective(num_particles)  # e.g. M2 sums unknown labels out
    if objective is None:
        objective = Trace_ELBO(
            num_particles=num_particles,
            vectorize_particles=num_particles > 1,
            max_plate_nesting=1,
        )
    was_training = model.training
    model.eval()
    try:
        total = sum(objective.loss(model.model, model.guide, xb) for xb in x.split(batch_size))
    finally:
        model.train(was_training)
    return -float(total) / x.shape[0]


def batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """``fn`` over ``x`` in batches along the first dimension, concatenated."""
    return torch.cat([fn(xb) for xb in x.split(batch_size)])


def report(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    particles: int = 1,
    nll_samples: int = 0,
    iwae_samples: int = 0,
    stats_samples: int = 16,
    *,
    train_x: torch.Tensor | None = None,
    train_labels: torch.Tensor | None = None,
    probe_counts: tuple[int | None, ...] = (100, 1000, None),
) -> dict[str, Any]:
    """Everything ``pyro-vae evaluate`` prints for a model on data ``x`` (nats per data point).

    - ``test_elbo``: the Monte Carlo ELBO with ``particles`` samples.
    - ``test_iwae`` (``iwae_samples > 0``): the IWAE bound with ``iwae_samples`` samples.
    - ``test_log_likelihood`` / ``test_nll`` (``nll_samples > 0``): log p(x) by importance sampling
      with ``nll_samples`` samples (:func:`log_likelihood`), and its negation, the number papers report.
    - ``rate``, ``distortion``, ``kl_per_dim``, ``active_units``: see :func:`latent_statistics`.
    - ``probe_accuracy_100``, ``probe_accuracy_1000``, ``probe_accuracy_all`` (when ``train_x``,
      ``train_labels`` and ``labels`` are all given): test accuracy of logistic regression on the
      latent means of class-balanced subsets of that many training examples, one key per size of
      ``probe_counts`` that fits the training set (:func:`pyro_vae.represent.linear_probe`).
    """
    out: dict[str, Any] = {
        "test_elbo": finite_result("the test ELBO", elbo(model, x, num_particles=particles))
    }
    if iwae_samples > 0:
        out["iwae_samples"] = iwae_samples
        out["test_iwae"] = float(
            finite_result("the IWAE bound", log_likelihood(model, x, iwae_samples).mean())
        )
    if nll_samples > 0:
        ll = float(finite_result("log p(x)", log_likelihood(model, x, nll_samples).mean()))
        out.update(nll_samples=nll_samples, test_log_likelihood=ll, test_nll=-ll)
    out.update(latent_statistics(model, x, stats_samples))
    from .models import Model

    if isinstance(model, Model):
        out.update(model.evaluate_extra(x, labels))  # e.g. classification accuracy of M2
    if train_x is not None and train_labels is not None and labels is not None:
        from .represent import linear_probe

        out.update(linear_probe(model, train_x, train_labels, x, labels, probe_counts))
    return out


def _model_and_guide(
    model: Any, guide: Callable | None, caller: str
) -> tuple[Callable, Callable, list[nn.Module]]:
    """The Pyro model and guide callables, and the ``nn.Module``s to put in eval mode meanwhile.

    ``model`` is an object with ``model`` and ``guide`` methods (a VAE, any ``nn.Module`` or not), or,
    with ``guide``, a Pyro model function. The modules are ``model`` and ``guide`` where they are
    ``nn.Module``s and the modules that own them where they are bound methods (``vae.model``): plain
    functions have no train/eval mode, and are run as they are.
    """
    if guide is None:
        fns = getattr(model, "model", None), getattr(model, "guide", None)
        if not all(callable(f) for f in fns):
            raise ConfigError(
                f"{caller} needs an object with .model and .guide methods (e.g. a VAE), or a Pyro "
                f"model function and guide=GUIDE_FUNCTION; got {type(model).__name__}"
            )
        owners = [model]
    else:
        fns = model, guide
        if not all(callable(f) for f in fns):
            raise ConfigError(
                f"{caller}(model, x, ..., guide=guide) needs a callable Pyro model and guide; got "
                f"{type(model).__name__} and {type(guide).__name__}"
            )
        owners = list(fns)
    owners += [getattr(f, "__self__", None) for f in fns]
    modules: list[nn.Module] = []
    for owner in owners:
        if isinstance(owner, nn.Module) and not any(owner is m for m in modules):
            modules.append(owner)
    return fns[0], fns[1], modules


@contextlib.contextmanager
def _evaluating(modules: list[nn.Module]) -> Iterator[None]:
    """No gradients and every module in eval mode (dropout off, batch norm on running statistics);
    each module's own mode is restored afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def log_likelihood(
    model: Any,
    x: torch.Tensor,
    num_samples: int = 5000,
    *,
    guide: Callable | None = None,
    batch_size: int = 256,
    max_elements: int = 2**24,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> torch.Tensor:
    r"""Per-data-point log p(x) by importance sampling with the guide as proposal, shape ``(N,)``:

    .. math:: \log p(x) \approx \log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k|x)},
        \quad z_k \sim q(z|x),

    (Burda et al. 2016, appendix; with K samples it is the IWAE-K bound, a stochastic lower bound
    that converges to log p(x)). ``model`` is an object with ``model`` and ``guide`` methods (e.g. a
    VAE), or a Pyro model function given with its guide function: ``log_likelihood(model_fn, x, K,
    guide=guide_fn)``. ``nn.Module``s among them run in eval mode, all without gradients.

    Works for any model/guide pair whose plate over data points is named ``data_plate``, with every
    sample site inside it; a plate written with Pyro's mini-batch idiom
    (``pyro.plate("data", N_total, subsample=idx)``) is fine, its ``N_total / N`` scale is taken out
    of the weights (:func:`~pyro_vae.objectives.importance.trace_log_weights_and_scale`). The guide
    and model run vectorised over a chunk of samples at once, the chunk sized so that a chunk of
    decoded data holds at most ``max_elements`` numbers (memory stays bounded whatever K is), and the
    chunks are combined by log-sum-exp.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"the number of importance samples must be positive, got {num_samples!r}")
    batch_size = check_count(batch_size, "log_likelihood: batch_size")
    model_fn, guide_fn, modules = _model_and_guide(model, guide, "log_likelihood")
    # float32 of the model's shape, finite, inside the likelihood's support (else log p(x) would be
    # NaN, or positive for data a Bernoulli cannot produce)
    x = as_data(model if guide is None else None, x, "log_likelihood")
    out = []
    per_point = max(1, x[0].numel()) if x.shape[0] else 1
    with _evaluating(modules):
        for xb in x.split(batch_size):
            chunk = max(1, min(num_samples, max_elements // (xb.shape[0] * per_point)))
            acc = torch.full((xb.shape[0],), -math.inf, device=xb.device)
            done = 0
            while done < num_samples:
                k = min(chunk, num_samples - done)
                model_trace, guide_trace = importance_traces(
                    model_fn, guide_fn, (xb,), {}, k, max_plate_nesting
                )
                # one log weight per row of xb, or an error that names the cause
                check_per_datum(model_trace, guide_trace, data_plate, xb.shape[0])
                lw = trace_log_weights(model_trace, guide_trace, max_plate_nesting, data_plate)
                acc = torch.logaddexp(acc, torch.logsumexp(lw, 0).to(acc))
                done += k
            out.append(acc - math.log(num_samples))
    return torch.cat(out)


def iwae_bound(
    model: Any, x: torch.Tensor, k: int = 50, *, guide: Callable | None = None, **kwargs: Any
) -> torch.Tensor:
    """The per-data-point IWAE-k bound (:func:`log_likelihood` with ``k`` samples); ``model`` and
    ``guide`` as there."""
    return log_likelihood(model, x, k, guide=guide, **kwargs)


def _arrange(
    t: torch.Tensor, site: dict[str, Any], event_dims: int, nest: int, data_plate: str
) -> torch.Tensor:
    """A tensor ``(*batch, *event)`` of a site inside the data plate -> ``(K, N, features)``."""
    batch_dims = t.dim() - event_dims
    ddim = data_dim(site, data_plate)
    t = t.movedim(batch_dims - (nest + 1), 0).movedim(batch_dims + ddim, 1)
    return t.reshape(t.shape[0], t.shape[1], -1)


def site_kl(guide_site: dict, model_site: dict, analytic: bool, data_plate: str) -> torch.Tensor:
    """KL(q || p) of one latent site, batch-shaped: in closed form where ``analytic`` (it is the
    ELBO's term, :func:`analytic_kl_sites`) and torch knows it, else ``log q - log p`` at the draw
    (unscaled by a subsampled data plate)."""
    kl = closed_form_kl(guide_site["fn"], model_site["fn"]) if analytic else None
    if kl is None:
        kl = site_log_prob(guide_site, data_plate) - site_log_prob(model_site, data_plate)
    return kl


def analytic_kl_sites(model_trace: Trace, guide_trace: Trace) -> set[str]:
    """:func:`~pyro_vae.objectives.kl.closed_form_kl_sites` for a pair of traces."""

    def latents(trace: Trace) -> list[str]:
        return [
            n
            for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]

    return closed_form_kl_sites(latents(model_trace), latents(guide_trace))


def _data_points(model_trace: Trace, data_plate: str, rows: int) -> int:
    """How many data points a batch of ``rows`` rows puts in the data plate: the plate's size, which
    is smaller than ``rows`` when the model subsamples the batch (``subsample_size=B`` and
    ``x[idx]``), else ``rows``."""
    for site in model_trace.nodes.values():
        frame = data_frame(site, data_plate) if site["type"] == "sample" else None
        if frame is not None and int(frame.size) > 0:
            return int(frame.size)
    return rows


def latent_statistics(
    model: Any,
    x: torch.Tensor,
    num_samples: int = 16,
    *,
    guide: Callable | None = None,
    batch_size: int = 256,
    threshold: float = 0.01,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> dict[str, Any]:
    """Rate, distortion, per-dimension KL and active units, averaged over the data points of ``x``.

    - ``rate``: KL(q(z|x) || p(z)) summed over latent sites, analytic where Pyro knows the KL and it is
      the ELBO's term (:func:`analytic_kl_sites`), else Monte Carlo; rate + distortion = -ELBO.
    - ``distortion``: -E_q[log p(x|z)], so that ELBO = -(rate + distortion).
    - ``kl_per_dim``: the KL of each latent dimension (latent sites that factorise per dimension, in
      trace order), the numbers behind the posterior-collapse bar chart.
    - ``active_units``: latent dimensions whose covariance over x of E_q[z|x] exceeds ``threshold``
      (Burda et al. 2016, sec. 5.2), over continuous latent sites; E_q[z|x] is the distribution's
      mean where it has one, else the mean of ``num_samples`` samples.
    Everything uses ``num_samples`` vectorised samples per data point, and is per data point: a data
    plate that subsamples (``pyro.plate("data", N_total, subsample=idx)``) has its ``N_total / N``
    scale taken out, and the averages are over the data points the plate holds. ``model`` and
    ``guide`` as in :func:`log_likelihood`.
    """
    model_fn, guide_fn, modules = _model_and_guide(model, guide, "latent_statistics")
    x = as_data(model if guide is None else None, x, "latent_statistics")
    nest = max_plate_nesting
    rate = distortion = 0.0
    n = 0
    kl_sums: dict[str, torch.Tensor] = {}
    means: dict[str, list[torch.Tensor]] = {}
    with _evaluating(modules):
        for xb in x.split(batch_size):
            model_trace, guide_trace = importance_traces(
                model_fn, guide_fn, (xb,), {}, num_samples, nest
            )
            n += _data_points(model_trace, data_plate, xb.shape[0])
            analytic = analytic_kl_sites(model_trace, guide_trace)
            for name, site in model_trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                if site["is_observed"]:
                    lp, _ = per_datum(site_log_prob(site, data_plate), site, nest, data_plate)
                    distortion -= float(lp.mean(0).sum())
                    continue
                g = guide_trace.nodes.get(name)
                if g is None:
                    continue
                kl, _ = per_datum(
                    site_kl(g, site, name in analytic, data_plate), g, nest, data_plate
                )
                rate += float(kl.mean(0).sum())
                if data_dim(g, data_plate) is None:
                    continue  # a global latent has no per-datum mean or per-datum KL
                try:
                    kd = per_dimension_kl(
                        g["fn"], site["fn"], g["value"], name, analytic=name in analytic
                    )  # (*batch, D)
                    kd = _arrange(kd, g, 1, nest, data_plate)
                    kl_sums[name] = kl_sums.get(name, 0.0) + kd.mean(0).sum(0)
                except ConfigError:
                    pass  # not factorised per dimension: it still counts in the rate
                if g["fn"].support.is_discrete:
                    continue  # active units are continuous units (e.g. not M2's class label)
                try:
                    m = g["fn"].mean.expand(g["value"].shape)
                except NotImplementedError:
                    m = g["value"]
                event_dims = len(g["fn"].event_shape)
                means.setdefault(name, []).append(
                    _arrange(m, g, event_dims, nest, data_plate).mean(0)
                )
    n = max(n, 1)
    kl_per_dim = [float(v) for t in kl_sums.values() for v in t / n]
    active = 0
    for parts in means.values():
        mu = torch.cat(parts)
        if mu.shape[0] > 1:
            active += int((mu.var(0) > threshold).sum())
    return {
        "rate": rate / n,
        "distortion": distortion / n,
        "kl_per_dim": kl_per_dim,
        "active_units": active,
    }
