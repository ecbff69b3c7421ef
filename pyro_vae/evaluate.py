"""Evaluation: per-image bounds on log p(x) over a data set."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import ELBO
from pyro.poutine import Trace
from torch import nn

from .boundary import as_data, check_count
from .errors import ConfigError
from .kernel import (
    analytic_kl_sites,
    chunks,
    evaluating,
    sample_chunk,
    site_kl,
    site_terms,
    traces,
)
from .models.base import as_model
from .objectives.importance import (
    DATA_PLATE,
    data_dim,
    data_frame,
    importance_traces,
    trace_log_weights,
)
from .objectives.kl import per_dimension_kl
from .progress import track
from .safety import finite_result

__all__ = [
    "analytic_kl_sites",
    "batched",
    "elbo",
    "iwae_bound",
    "latent_statistics",
    "log_likelihood",
    "report",
    "site_kl",
]


@torch.no_grad()
def elbo(
    model: Any,
    x: torch.Tensor,
    num_particles: int = 1,
    batch_size: int = 1024,
    objective: ELBO | None = None,
    *,
    guide: Callable | None = None,
) -> float:
    """The mean ELBO per data point (nats; higher is better), in batches, without gradients.

    ``model`` is anything with Pyro ``model(x)`` and ``guide(x)`` methods whose data plate is named
    ``data``, or a Pyro model function given with its guide function (``guide=``), as for
    :func:`log_likelihood`. ``objective`` defaults to the Monte Carlo ELBO with ``num_particles``
    particles.
    """
    model = as_model(model, guide, caller="elbo")
    x = as_data(model, x, "elbo")
    num_particles = check_count(num_particles, "elbo: num_particles")
    batch_size = check_count(batch_size, "elbo: batch_size")
    if objective is None:
        objective = model.evaluation_objective(num_particles)  # e.g. M2 sums unknown labels out
    with evaluating(model):
        total = sum(objective.loss(model.model, model.guide, xb) for xb in x.split(batch_size))
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
    - ``test_elbo_bpd``, ``test_iwae_bpd``, ``test_log_likelihood_bpd``: the same in bits per
      dimension, where p(x|z) is a distribution over the quantized data (else ``bits_per_dim`` says
      why not; :mod:`pyro_vae.units`).
    - ``rate``, ``distortion``, ``kl_per_dim``, ``active_units``: see :func:`latent_statistics`.
    - ``probe_accuracy_100``, ``probe_accuracy_1000``, ``probe_accuracy_all`` (when ``train_x``,
      ``train_labels`` and ``labels`` are all given): test accuracy of logistic regression on the
      latent means of class-balanced subsets of that many training examples, one key per size of
      ``probe_counts`` that fits the training set (:func:`pyro_vae.represent.linear_probe`).
    """
    model = as_model(model, caller="report")
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
    from .units import bits_report

    out.update(bits_report(model.model, x, out))
    out.update(latent_statistics(model, x, stats_samples))
    out.update(model.evaluate_extra(x, labels))  # e.g. classification accuracy of M2
    if train_x is not None and train_labels is not None and labels is not None:
        from .represent import linear_probe

        out.update(linear_probe(model, train_x, train_labels, x, labels, probe_counts))
    return out


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
    model = as_model(model, guide, caller="log_likelihood")
    # float32 of the model's shape, finite, inside the likelihood's support (else log p(x) would be
    # NaN, or positive for data a Bernoulli cannot produce)
    x = as_data(model, x, "log_likelihood")
    out = []
    batches = x.split(batch_size)
    desc = f"log p(x), {num_samples} samples"
    with evaluating(model):
        for xb in track(batches, total=len(batches), desc=desc):
            acc = torch.full((xb.shape[0],), -math.inf, device=xb.device)
            for k in chunks(num_samples, sample_chunk(x, xb.shape[0], num_samples, max_elements)):
                model_trace, guide_trace = traces(model, xb, k, max_plate_nesting, data_plate)
                lw = trace_log_weights(model_trace, guide_trace, max_plate_nesting, data_plate)
                acc = torch.logaddexp(acc, torch.logsumexp(lw, 0).to(acc))
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
    num_samples = check_count(num_samples, "latent_statistics: num_samples")
    batch_size = check_count(batch_size, "latent_statistics: batch_size")
    model = as_model(model, guide, caller="latent_statistics")
    x = as_data(model, x, "latent_statistics")
    nest = max_plate_nesting
    rate = distortion = 0.0
    n = 0
    kl_sums: dict[str, torch.Tensor] = {}
    means: dict[str, list[torch.Tensor]] = {}
    with evaluating(model):
        for xb in x.split(batch_size):
            model_trace, guide_trace = importance_traces(
                model.model, model.guide, (xb,), {}, num_samples, nest
            )
            n += _data_points(model_trace, data_plate, xb.shape[0])
            for term in site_terms(model_trace, guide_trace, nest, data_plate):
                name, site, g = term.name, term.site, term.guide
                if g is None:
                    distortion -= float(term.value.mean(0).sum())
                    continue
                rate += float(term.value.mean(0).sum())
                if data_dim(g, data_plate) is None:
                    continue  # a global latent has no per-datum mean or per-datum KL
                try:
                    kd = per_dimension_kl(
                        g["fn"], site["fn"], g["value"], name, analytic=term.analytic
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
