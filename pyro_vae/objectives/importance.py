"""Per-data-point importance weights from the traces of any model/guide pair, and the bound family
built on them.

The guide and the model run once under a particle plate (dim ``-(max_plate_nesting + 1)``), as Pyro's
vectorised ELBOs do, and every sample site's log density is reduced to one number per (particle, data
point): the dim of the plate named ``data_plate`` (default ``"data"``) is kept and every other plate
dim is summed out. Sites outside the data plate (global latents) couple the data points, so when
there are any the whole batch counts as one data point. Under Pyro's mini-batch idiom
(``pyro.plate("data", N_total, subsample=idx)``) the plate's ``N_total / N`` scale is taken out of the
log weights and multiplies the summed bound instead (:func:`trace_log_weights_and_scale`).

Relation to Pyro (1.9). :func:`pyro.infer.importance.vectorized_importance_weights` sums the log
weights over every plate but the particles', so it gives no per-datum bound. ``pyro.infer.RenyiELBO``
does weigh local latents datum by datum: it sums out only the plates that do not hold every model
site, so a data plate around the whole model stays a per-datum dim. With ``vectorize_particles=True``
and the same ``max_plate_nesting``, ``RenyiELBO(alpha, K)`` gives the loss and the gradients of
``renyi`` (``alpha``) and ``iwae`` (``alpha = 0``) here on the same draws, for a reparameterised guide
and every site in the plate named ``data_plate`` (also with a global latent outside it: both then
weigh the batch as one datum). They differ where:

- the data plate subsamples: Pyro keeps its ``N_total / N`` scale inside the log weights (each weight
  raised to that power, not a bound per datum); here it multiplies the sum of the per-datum bounds;
- the per-datum plate has another name than ``data_plate``: Pyro finds it by structure, here the
  batch counts as one datum (pass ``data_plate``);
- a further plate holds every site (a latent per datum and cell): Pyro weighs each cell on its own,
  here a datum's cells make one weight;
- the guide has non-reparameterised sites: Pyro adds a score-function term, here it is a
  ``ConfigError``;
- the traces hold no ``param`` site (parameters not registered by ``pyro.module``/``pyro.param``):
  Pyro's ``loss_and_grads`` then computes no gradients at all, here it always does;
- ``vectorize_particles=False``: Pyro draws the particles one by one, the same estimator on other
  draws.

Both need every plate within ``max_plate_nesting``. What Pyro lacks: ``differentiable_loss``, per-datum
log weights (:func:`log_weights`, :func:`pyro_vae.evaluate.log_likelihood`), ``alpha = 1`` (the ELBO
here), DReG gradients (:mod:`~pyro_vae.objectives.dreg`) and KL weighting and free bits
(:mod:`~pyro_vae.objectives.kl`).
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.poutine import Trace
from pyro.poutine.indep_messenger import CondIndepStackFrame
from pyro.poutine.util import site_is_subsample
from pyro.util import warn_if_nan

from ..describe import Described
from ..errors import ConfigError

DATA_PLATE = "data"
PARTICLE_PLATE = "num_particles_vectorized"


def data_frame(site: dict[str, Any], data_plate: str = DATA_PLATE) -> CondIndepStackFrame | None:
    """The frame of the vectorised plate named ``data_plate`` in the site's plate stack, or ``None``."""
    for frame in site["cond_indep_stack"]:
        if frame.name == data_plate and frame.vectorized:
            return frame
    return None


def data_dim(site: dict[str, Any], data_plate: str = DATA_PLATE) -> int | None:
    """The (negative) batch dim of the plate named ``data_plate`` at this site, or ``None``."""
    frame = data_frame(site, data_plate)
    return None if frame is None else frame.dim


def subsample_scale(site: dict[str, Any], data_plate: str = DATA_PLATE) -> float:
    r"""``N / B`` when the site's data plate subsamples ``B`` of its ``N`` data points, else 1.

    ``pyro.plate("data", N, subsample=idx)`` (or ``subsample_size=B``) multiplies the ``scale`` of
    every site inside it by ``N / B`` (Pyro's ``SubsampleMessenger``), and its
    ``CondIndepStackFrame`` records ``size = B`` and ``full_size = N``. That factor, and no other
    scale, is what this returns.
    """
    frame = data_frame(site, data_plate)
    if frame is None or frame.full_size is None:
        return 1.0
    full, size = float(frame.full_size), float(frame.size)
    return 1.0 if full == size or size <= 0 else full / size


def site_log_prob(site: dict[str, Any], data_plate: str = DATA_PLATE) -> torch.Tensor:
    """``site["log_prob"]`` (scaled and masked by Pyro) with the data plate's ``N / B`` taken out.

    Every other scale stays in, in particular the KL weight that
    :class:`~pyro_vae.objectives.kl.KLWeighted` puts on the latent sites.
    """
    factor = subsample_scale(site, data_plate)
    return site["log_prob"] if factor == 1.0 else site["log_prob"] / factor


def per_datum(
    t: torch.Tensor, site: dict[str, Any], max_plate_nesting: int, data_plate: str = DATA_PLATE
) -> tuple[torch.Tensor, bool]:
    """Reduce a batch-shaped tensor of a site (e.g. its ``log_prob``) to ``(K or 1, N or 1)``.

    Returns the tensor and whether the site lies inside the data plate. Every plate dim other than the
    particle dim and the data dim is summed out.
    """
    nd = max_plate_nesting + 1
    if not torch.is_tensor(t):
        t = torch.as_tensor(t)
    if t.dim() < nd:
        t = t.reshape((1,) * (nd - t.dim()) + t.shape)
    elif t.dim() > nd:  # dims left of the particle plate (e.g. enumeration) are summed out
        t = t.sum(tuple(range(t.dim() - nd)))
    ddim = data_dim(site, data_plate)
    other = [d for d in range(-nd + 1, 0) if d != ddim]
    if other:
        t = t.sum(other, keepdim=True)
    return t.reshape(t.shape[0], -1), ddim is not None


def particle_plate(num_particles: int, max_plate_nesting: int) -> pyro.plate:
    return pyro.plate(PARTICLE_PLATE, num_particles, dim=-(max_plate_nesting + 1))


def importance_traces(
    model: Any,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_particles: int,
    max_plate_nesting: int = 1,
) -> tuple[Trace, Trace]:
    """One vectorised guide trace with ``num_particles`` particles and the model replayed against it.

    Uses Pyro's :func:`~pyro.infer.enum.get_importance_trace`, so shapes are validated as in Pyro's
    own ELBOs and ``log_prob`` (including each site's ``scale``) is computed at every site.
    """
    return get_importance_trace(
        "flat",
        max_plate_nesting + 1,
        particle_plate(num_particles, max_plate_nesting)(model),
        particle_plate(num_particles, max_plate_nesting)(guide),
        args,
        kwargs,
    )


def _sample_sites(trace: Trace) -> list[dict[str, Any]]:
    return [
        site
        for site in trace.nodes.values()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def trace_log_weights_and_scale(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> tuple[torch.Tensor, float]:
    r"""Per-datum log weights ``(K, N)`` and the factor ``N_total / N`` that turns a sum over the
    mini-batch into an estimate over the whole data set.

    .. math:: \log w[k, n] = \sum_{\text{model sites}} \log p - \sum_{\text{guide sites}} \log q

    at particle ``k`` and data point ``n``. Under Pyro's mini-batch idiom
    (``pyro.plate("data", N_total, subsample=idx)`` or ``subsample_size=N``) every site in the data
    plate has ``log_prob`` scaled by ``N_total / N``; inside a log-mean-exp that factor would be an
    exponent on the weights (``w^(N_total/N)``), not a count of data points. So it is taken out of
    every site (:func:`site_log_prob`): the log weights are those of the data alone, exactly what a
    plain ``pyro.plate("data", N)`` gives, and the factor is returned for the loss to multiply the
    summed bound by. Every other scale stays in the log weights, e.g. the KL weight ``beta`` on the
    latent sites (:class:`~pyro_vae.objectives.kl.KLWeighted`):
    ``log w = log p(x|z) + beta [log p(z) - log q(z|x)]``.

    A site outside the data plate (a global latent) couples the data points: then the batch is one
    importance-weighted datum, shape ``(K, 1)``, its local terms keep Pyro's ``N_total / N`` (the
    mini-batch estimates the log joint of the whole data set for the global latent, as in Pyro's
    own ELBOs) and the returned factor is 1.
    """
    terms: list[tuple[torch.Tensor, bool, float, str]] = []
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in _sample_sites(trace):
            t, is_local = per_datum(
                site_log_prob(site, data_plate), site, max_plate_nesting, data_plate
            )
            terms.append((sign * t, is_local, subsample_scale(site, data_plate), site["name"]))
    if not terms:
        raise ConfigError("the model has no sample sites, so there is nothing to weigh")
    if not any(is_local for _, is_local, _, _ in terms):
        # no site in the data plate but plates under other names: the data plate is misnamed, and
        # weighing the batch as one datum would silently give another bound
        plates = _plate_names(_sample_sites(model_trace)) or _plate_names(
            _sample_sites(guide_trace)
        )
        if plates:
            raise ConfigError(
                f"no sample site lies in a plate named {data_plate!r}; the model's plates are "
                f'{", ".join(map(repr, plates))}: pass data_plate="NAME" (--objective-opt '
                "data_plate=NAME) naming the plate over the data points"
            )
    if all(is_local for _, is_local, _, _ in terms):
        factors = {f: name for _, _, f, name in terms}
        if len(factors) > 1:
            (f1, n1), (f2, n2) = list(factors.items())[:2]
            raise ConfigError(
                f"the plate {data_plate!r} is subsampled differently at site {n1!r} (scale "
                f"{f1:g}) and at site {n2!r} (scale {f2:g}); the model and the guide must "
                "subsample it alike (the same subsample= or subsample_size=)"
            )
        total = terms[0][0]
        for t, *_ in terms[1:]:
            total = total + t
        return total, next(iter(factors))
    # a global latent couples the data points: the batch is a single importance-weighted datum
    total = sum((f * t).sum(-1, keepdim=True) for t, _, f, _ in terms)
    return total, 1.0


def trace_log_weights(
    model_trace: Trace,
    guide_trace: Trace,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> torch.Tensor:
    r"""``log w[k, n] = log p(x_n, z_kn) - log q(z_kn | x_n)``, shape ``(K, N)``.

    Summed over every model sample site (observed and latent) minus every guide sample site, exact
    per datum under a subsampled data plate (see :func:`trace_log_weights_and_scale`). With a latent
    outside the data plate the batch is one data point and the shape is ``(K, 1)``.
    """
    return trace_log_weights_and_scale(model_trace, guide_trace, max_plate_nesting, data_plate)[0]


def _plate_names(sites: list[dict[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for site in sites:
        for frame in site["cond_indep_stack"]:  # outermost first
            if frame.name != PARTICLE_PLATE:
                names[frame.name] = None
    return list(names)


def check_per_datum(
    model_trace: Trace,
    guide_trace: Trace,
    data_plate: str = DATA_PLATE,
    batch_size: int | None = None,
) -> None:
    """Raise a one-line :class:`ConfigError` naming the cause when the traces do not give one log
    weight per data point of a batch of ``batch_size``.

    The causes, in order: no sample site lies in a plate named ``data_plate`` (the plate has another
    name: the message lists the plates the model uses and says to pass ``data_plate``); a sample site
    lies outside that plate (a latent shared by the batch: the message names it); the plate holds
    another number of data points than the batch has rows (it subsamples them).
    """
    model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
    sites = model_sites + guide_sites
    inside = [site for site in sites if data_frame(site, data_plate) is not None]
    if not inside:
        plates = _plate_names(model_sites) or _plate_names(guide_sites)
        where = (
            f"its plates are {', '.join(repr(p) for p in plates)}"
            if plates
            else "it declares no plate"
        )
        raise ConfigError(
            f"no sample site of the model lies in a plate named {data_plate!r} ({where}); pass "
            f'data_plate="NAME" naming the plate over the data points'
            + ("" if plates else f", after wrapping them in pyro.plate({data_plate!r}, len(x))")
        )
    outside: dict[str, str] = {}
    for site in sites:
        if data_frame(site, data_plate) is None:
            kind = "observed" if site["is_observed"] else "latent"
            outside.setdefault(site["name"], kind)
    if outside:
        named = ", ".join(f"{kind} site {name!r}" for name, kind in outside.items())
        verb = "lies" if len(outside) == 1 else "lie"
        raise ConfigError(
            f"a per-data-point bound needs every sample site inside the plate named {data_plate!r}, "
            f"but {named} {verb} outside it, shared by the whole batch"
        )
    if batch_size is not None:
        for site in inside:
            frame = data_frame(site, data_plate)
            if int(frame.size) not in (batch_size, -1):
                raise ConfigError(
                    f"the plate {data_plate!r} holds {int(frame.size)} data points at site "
                    f"{site['name']!r} (of {frame.full_size}) but the batch has {batch_size} rows; "
                    "to score every row the plate must cover the whole batch (no subsample, or "
                    "subsample_size=len(x))"
                )


def log_weights(
    model: Any,
    guide: Any,
    *args: Any,
    num_particles: int = 1,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
    **kwargs: Any,
) -> torch.Tensor:
    """Per-data-point log importance weights ``(num_particles, N)`` of any model/guide pair."""
    model_trace, guide_trace = importance_traces(
        model, guide, args, kwargs, num_particles, max_plate_nesting
    )
    return trace_log_weights(model_trace, guide_trace, max_plate_nesting, data_plate)


def log_mean_exp(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(t, dim) - math.log(t.shape[dim])


def check_reparameterized(guide_trace: Trace, objective: str) -> None:
    for name, site in guide_trace.nodes.items():
        if (
            site["type"] == "sample"
            and not site["is_observed"]
            and not site_is_subsample(site)
            and not site["fn"].has_rsample
        ):
            raise ConfigError(
                f"the {objective} objective needs reparameterized guide sites, but {name!r} is "
                f"drawn from {type(site['fn']).__name__}; use --objective elbo instead"
            )


class ImportanceWeightedELBO(Described, ELBO):
    r"""Base class of bounds that are a function of the per-datum log weights ``log w[k, n]``.

    Subclasses implement :meth:`bound`, mapping ``(K, N)`` log weights to ``(N,)`` per-datum bounds;
    the loss is minus their sum over the batch,

    .. math:: \text{loss} = -\frac{N_\text{total}}{N} \sum_{n=1}^N \mathcal{L}(x_n),

    where ``N_total / N`` is 1 unless the data plate subsamples (Pyro's mini-batch idiom,
    :func:`trace_log_weights_and_scale`). Particles are always vectorised (one pass through the
    networks). Guide sites must be reparameterized. Works on the traces of any model/guide pair whose
    plates fit in ``max_plate_nesting`` and whose data plate is named ``data_plate``.
    """

    def __init__(
        self, num_particles: int = 1, max_plate_nesting: int = 1, data_plate: str = DATA_PLATE
    ) -> None:
        if not isinstance(num_particles, int) or num_particles < 1:
            raise ConfigError(f"--particles must be a positive integer, got {num_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.data_plate = data_plate

    # -- the bound -------------------------------------------------------------------------------
    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """``(K, N)`` log weights -> ``(N,)`` per-datum bound."""
        raise NotImplementedError

    # -- Pyro's ELBO interface -------------------------------------------------------------------
    def _get_trace(self, model, guide, args, kwargs):
        return importance_traces(
            model, guide, args, kwargs, self.num_particles, self.max_plate_nesting
        )

    def log_weights_and_scale(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, float]:
        """Per-datum log weights ``(K, N)`` and the data plate's ``N_total / N`` (1 when the plate
        does not subsample): :func:`trace_log_weights_and_scale` on one pair of traces."""
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        if torch.is_grad_enabled():
            check_reparameterized(guide_trace, type(self).__name__)
        return trace_log_weights_and_scale(
            model_trace, guide_trace, self.max_plate_nesting, self.data_plate
        )

    def log_weights(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Per-datum log weights ``(K, N)``, exact under a subsampled data plate."""
        return self.log_weights_and_scale(model, guide, *args, **kwargs)[0]

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        log_w, scale = self.log_weights_and_scale(model, guide, *args, **kwargs)
        # N_total / N times the mini-batch sum: an unbiased estimate of the whole data set's bound
        loss = -scale * self.bound(log_w).sum()
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward(retain_graph=self.retain_graph)
        return loss.item()


def replay_trace(trace: Trace, values: dict[str, torch.Tensor]) -> Trace:
    """A copy of ``trace`` whose sample sites take ``values`` (for :func:`pyro.poutine.replay`)."""
    out = trace.copy()
    for name, value in values.items():
        out.nodes[name] = dict(out.nodes[name], value=value)
    return out


__all__ = [
    "DATA_PLATE",
    "ImportanceWeightedELBO",
    "check_per_datum",
    "data_frame",
    "importance_traces",
    "log_mean_exp",
    "log_weights",
    "per_datum",
    "replay_trace",
    "site_log_prob",
    "subsample_scale",
    "trace_log_weights",
    "trace_log_weights_and_scale",
]
