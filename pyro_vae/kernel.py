"""The evaluation kernel: how every evaluation runs a model, shared by :mod:`pyro_vae.evaluate`,
:mod:`pyro_vae.scores` and :mod:`pyro_vae.represent`.

- :func:`evaluating`: eval mode and no gradients, each module's own mode restored afterwards;
- :func:`seeded`: draws under a seed, the caller's random state untouched;
- :func:`sample_chunk` / :func:`chunks`: samples per vectorised pass, so that memory stays bounded
  by ``max_elements`` decoded numbers whatever the number of samples;
- :func:`traces` and :func:`site_terms`: the importance traces of a batch and the per-datum terms of
  the bound, site by site: log p(x|z) of the observed sites, KL(q || p) of the latent ones (closed form
  where it is the ELBO's term, :func:`analytic_kl_sites`, else log q - log p at the draw).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from .models.base import Model
from .objectives.importance import (
    check_per_datum,
    importance_traces,
    per_datum,
    site_log_prob,
)
from .objectives.kl import closed_form_kl, closed_form_kl_sites


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """No gradients and every module in eval mode (dropout off, batch norm on running statistics);
    each module's own mode is restored afterwards."""
    modules = list(model.modules())
    modes = [m.training for m in modules]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device | None = None) -> Iterator[None]:
    """Torch's generators seeded with ``seed`` inside and restored afterwards, so that an evaluation
    neither depends on nor disturbs the caller's random state (Pyro draws from torch's); ``None``:
    the generators as they are. ``device``: the one CUDA device to fork (default: every one)."""
    if seed is None:
        yield
        return
    if not torch.cuda.is_available():
        devices: list | None = []
    elif device is not None:
        devices = [device] if device.type == "cuda" else []
    else:
        devices = None
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def per_point(x: torch.Tensor) -> int:
    """Numbers per data point of ``x`` (at least 1)."""
    return max(1, x[0].numel()) if x.shape[0] else 1


def sample_chunk(x: torch.Tensor, rows: int, samples: int, max_elements: int) -> int:
    """Samples per vectorised pass over ``rows`` rows of ``x``: at most ``samples``, and such that
    the decoded data of a pass hold at most ``max_elements`` numbers (at least one sample)."""
    return max(1, min(samples, max_elements // (rows * per_point(x))))


def chunks(total: int, chunk: int) -> Iterator[int]:
    """The sizes of the passes that draw ``total`` samples ``chunk`` at a time."""
    done = 0
    while done < total:
        k = min(chunk, total - done)
        yield k
        done += k


def traces(
    model: Model, xb: torch.Tensor, k: int, nest: int, data_plate: str
) -> tuple[Trace, Trace]:
    """The model and guide traces of ``k`` vectorised samples for batch ``xb``, checked to give one
    term per row of ``xb`` (or an error that names the cause)."""
    model_trace, guide_trace = importance_traces(model.model, model.guide, (xb,), {}, k, nest)
    check_per_datum(model_trace, guide_trace, data_plate, xb.shape[0])
    return model_trace, guide_trace


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


class Term(NamedTuple):
    """One sample site's per-datum term of the bound, ``(K or 1, B)``: log p of an observed site, or
    KL(q || p) of a latent one (``guide`` its guide site, ``analytic`` whether in closed form)."""

    name: str
    site: dict[str, Any]
    guide: dict[str, Any] | None
    value: torch.Tensor
    analytic: bool


def site_terms(
    model_trace: Trace, guide_trace: Trace, nest: int, data_plate: str
) -> Iterator[Term]:
    """The per-datum terms of the bound, site by site in the model's order: every observed site,
    and every latent site that the guide samples too."""
    analytic = analytic_kl_sites(model_trace, guide_trace)
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["is_observed"]:
            lp = per_datum(site_log_prob(site, data_plate), site, nest, data_plate)[0]
            yield Term(name, site, None, lp, False)
            continue
        g = guide_trace.nodes.get(name)
        if g is None:
            continue
        kl = site_kl(g, site, name in analytic, data_plate)
        yield Term(name, site, g, per_datum(kl, g, nest, data_plate)[0], name in analytic)
