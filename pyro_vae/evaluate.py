"""Evaluation: per-image bounds on log p(x) over a data set."""

from __future__ import annotations

from collections.abc import Callable

import torch
from pyro.infer import ELBO, Trace_ELBO
from torch import nn


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
) -> dict[str, float]:
    """Everything ``pyro-vae evaluate`` prints for a model on data ``x``."""
    out = {"test_elbo": elbo(model, x, num_particles=particles)}
    extra = getattr(model, "evaluate_extra", None)  # e.g. classification accuracy of M2
    if extra is not None:
        out.update(extra(x, labels))
    return out
