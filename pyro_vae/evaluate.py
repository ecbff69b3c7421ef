"""Evaluation: per-image bounds on log p(x) over a data set."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro.infer import ELBO, Trace_ELBO
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from .errors import ConfigError
from .objectives.importance import (
    DATA_PLATE,
    data_dim,
    importance_traces,
    log_weights,
    per_datum,
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
    make = getattr(model, "evaluation_objective", None)  # e.g. M2 sums unknown labels out exactly
    if objective is None and make is not None:
        objective = make(num_particles)
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
) -> dict[str, Any]:
    """Everything ``pyro-vae evaluate`` prints for a model on data ``x`` (nats per data point).

    - ``test_elbo``: the Monte Carlo ELBO with ``particles`` samples.
    - ``test_iwae`` (``iwae_samples > 0``): the IWAE bound with ``iwae_samples`` samples.
    - ``test_log_likelihood`` / ``test_nll`` (``nll_samples > 0``): log p(x) by importance sampling
      with ``nll_samples`` samples (:func:`log_likelihood`), and its negation, the number papers report.
    - ``rate``, ``distortion``, ``kl_per_dim``, ``active_units``: see :func:`latent_statistics`.
    """
    out: dict[str, Any] = {"test_elbo": elbo(model, x, num_particles=particles)}
    if iwae_samples > 0:
        out["iwae_samples"] = iwae_samples
        out["test_iwae"] = float(log_likelihood(model, x, iwae_samples).mean())
    if nll_samples > 0:
        ll = float(log_likelihood(model, x, nll_samples).mean())
        out.update(nll_samples=nll_samples, test_log_likelihood=ll, test_nll=-ll)
    out.update(latent_statistics(model, x, stats_samples))
    extra = getattr(model, "evaluate_extra", None)  # e.g. classification accuracy of M2
    if extra is not None:
        out.update(extra(x, labels))
    return out


def _eval_mode(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn(model, ...)`` without gradients and with the model in eval mode, then restore it."""

    def wrapped(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)

    wrapped.__doc__, wrapped.__name__ = fn.__doc__, fn.__name__
    return wrapped


@_eval_mode
def log_likelihood(
    model: nn.Module,
    x: torch.Tensor,
    num_samples: int = 5000,
    *,
    batch_size: int = 256,
    max_elements: int = 2**24,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> torch.Tensor:
    r"""Per-data-point log p(x) by importance sampling with the guide as proposal, shape ``(N,)``:

    .. math:: \log p(x) \approx \log \frac{1}{K} \sum_{k=1}^K \frac{p(x, z_k)}{q(z_k|x)},
        \quad z_k \sim q(z|x),

    (Burda et al. 2016, appendix; with K samples it is the IWAE-K bound, a stochastic lower bound
    that converges to log p(x)). Works for any ``model.model`` / ``model.guide`` pair whose data plate
    is named ``data_plate``: the guide and model run vectorised over a chunk of samples at once, the
    chunk sized so that a chunk of decoded data holds at most ``max_elements`` numbers (memory stays
    bounded whatever K is), and the chunks are combined by log-sum-exp.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"the number of importance samples must be positive, got {num_samples!r}")
    out = []
    per_point = max(1, x[0].numel()) if x.shape[0] else 1
    for xb in x.split(batch_size):
        chunk = max(1, min(num_samples, max_elements // (xb.shape[0] * per_point)))
        acc = torch.full((xb.shape[0],), -math.inf, device=xb.device)
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            lw = log_weights(
                model.model,
                model.guide,
                xb,
                num_particles=k,
                max_plate_nesting=max_plate_nesting,
                data_plate=data_plate,
            )
            if lw.shape[1] != xb.shape[0]:
                raise ConfigError(
                    "a per-data-point log-likelihood needs every latent inside the plate named "
                    f"{data_plate!r}; this model has a latent shared by the whole batch"
                )
            acc = torch.logaddexp(acc, torch.logsumexp(lw, 0).to(acc))
            done += k
        out.append(acc - math.log(num_samples))
    return torch.cat(out)


def iwae_bound(model: nn.Module, x: torch.Tensor, k: int = 50, **kwargs: Any) -> torch.Tensor:
    """The per-data-point IWAE-k bound (:func:`log_likelihood` with ``k`` samples)."""
    return log_likelihood(model, x, k, **kwargs)


def _arrange(
    t: torch.Tensor, site: dict[str, Any], event_dims: int, nest: int, data_plate: str
) -> torch.Tensor:
    """A tensor ``(*batch, *event)`` of a site inside the data plate -> ``(K, N, features)``."""
    batch_dims = t.dim() - event_dims
    ddim = data_dim(site, data_plate)
    t = t.movedim(batch_dims - (nest + 1), 0).movedim(batch_dims + ddim, 1)
    return t.reshape(t.shape[0], t.shape[1], -1)


def analytic_kl_sites(model_trace: Trace, guide_trace: Trace) -> set[str]:
    """:func:`~pyro_vae.objectives.kl.closed_form_kl_sites` for a pair of traces."""

    def latents(trace: Trace) -> list[str]:
        return [
            n
            for n, s in trace.nodes.items()
            if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
        ]

    return closed_form_kl_sites(latents(model_trace), latents(guide_trace))


@_eval_mode
def latent_statistics(
    model: nn.Module,
    x: torch.Tensor,
    num_samples: int = 16,
    *,
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
      (Burda et al. 2016, sec. 5.2), over continuous latent sites; E_q[z|x] is the distribution's mean where it has one, else the
      mean of ``num_samples`` samples.
    Everything uses ``num_samples`` vectorised samples per data point.
    """
    nest = max_plate_nesting
    rate = distortion = 0.0
    kl_sums: dict[str, torch.Tensor] = {}
    means: dict[str, list[torch.Tensor]] = {}
    for xb in x.split(batch_size):
        model_trace, guide_trace = importance_traces(
            model.model, model.guide, (xb,), {}, num_samples, nest
        )
        analytic = analytic_kl_sites(model_trace, guide_trace)
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                lp, _ = per_datum(site["log_prob"], site, nest, data_plate)
                distortion -= float(lp.mean(0).sum())
                continue
            g = guide_trace.nodes.get(name)
            if g is None:
                continue
            kl = closed_form_kl(g["fn"], site["fn"]) if name in analytic else None
            if kl is None:
                kl = g["log_prob"] - site["log_prob"]
            kl, _ = per_datum(kl, g, nest, data_plate)
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
            means.setdefault(name, []).append(_arrange(m, g, event_dims, nest, data_plate).mean(0))
    n = x.shape[0]
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
