"""Bits per dimension, and whether a model's numbers may be read as code lengths of its data.

``-log p(x)`` is a code length (nats; ``/ ln 2`` bits) only when p(x|z) is a probability mass
function over the values the data take: a discretized logistic on 8-bit pixels, a Bernoulli on
binary data. A density (``gaussian``, ``continuous-bernoulli``) or the Bernoulli cross-entropy of grey
pixels is not, and then neither bits per dimension nor the input-complexity score (which subtracts a
compressor's length in bits, Serra et al. 2020) mean anything. :func:`quantized_dims` decides that
from the model's own trace: every observed site's distribution must have a discrete support that
holds the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pyro import poutine

from .errors import ConfigError

LN2 = math.log(2.0)


class NotQuantized(ConfigError):
    """The model's likelihood is not a distribution over the quantized data (the message says why)."""


def quantized_dims(model_fn: Callable, x: torch.Tensor) -> int:
    """The number of data dimensions per datum that the model gives a probability mass function over,
    or :class:`NotQuantized` naming the observed site that is not one.

    ``model_fn`` is a Pyro model called as ``model_fn(x)``; it is traced once on a few rows of ``x``,
    with its latents drawn from the prior (the support of p(x|z) does not depend on z).
    """
    rows = x[: min(4, x.shape[0])]
    with torch.no_grad():
        trace = poutine.trace(model_fn).get_trace(rows)
    dims = 0
    observed = 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"]:
            continue
        fn = site["fn"]
        try:
            support = fn.support
        except NotImplementedError:
            support = None
        kind = _describe(fn)
        if support is None or not support.is_discrete:
            raise NotQuantized(
                f"p({name}|z) is {kind}, a density, not a distribution over quantized pixels; use "
                "--likelihood discretized-logistic or logistic-mixture on 8-bit data (bernoulli on "
                "binarized data)"
            )
        if not bool(support.check(site["value"]).all()):
            raise NotQuantized(
                f"the data are not all values p({name}|z) ({kind}) puts mass on (e.g. grey pixels "
                "under a Bernoulli); binarize them, or use --likelihood discretized-logistic on "
                "8-bit data"
            )
        observed += 1
        dims += math.prod(fn.event_shape) if fn.event_shape else 1
    if observed == 0:
        raise NotQuantized("the model observes no data")
    return dims


def _describe(fn: Any) -> str:
    while hasattr(fn, "base_dist"):  # Independent wrappers say nothing of the family
        fn = fn.base_dist
    return type(fn).__name__


def bits_per_dim(log_px: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """``-log p(x) / (dims ln 2)``: a log-likelihood in nats per datum as bits per dimension."""
    return -log_px / (dims * LN2)


def bits_report(model_fn: Callable, x: torch.Tensor, report: dict[str, Any]) -> dict[str, Any]:
    """Bits per dimension of the bounds in an evaluation ``report`` (``test_elbo``, ``test_iwae``,
    ``test_log_likelihood``), as ``*_bpd`` entries; or ``bits_per_dim: "not reported: ..."`` where the
    likelihood is not a distribution over the quantized data."""
    try:
        dims = quantized_dims(model_fn, x)
    except NotQuantized as e:
        return {"bits_per_dim": f"not reported: {e}"}
    out: dict[str, Any] = {"data_dims": dims}
    for key in ("test_elbo", "test_iwae", "test_log_likelihood"):
        if key in report:
            out[f"{key}_bpd"] = float(bits_per_dim(report[key], dims))
    return out
