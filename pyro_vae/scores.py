r"""Per-example scores of a trained model, for out-of-distribution (OOD) and anomaly detection.

:func:`score` gives, for every example of a data set and in its order, numbers in nats:

================  ====  ==============================================================================
score             sign  what it is
================  ====  ==============================================================================
``elbo``          -1    the Monte Carlo ELBO, E_q[log p(x, z) - log q(z|x)]
``log_px``        -1    log p(x) by importance sampling (:func:`pyro_vae.evaluate.log_likelihood`)
``rate``          +1    KL(q(z|x) || p(z)), summed over latent sites
``recon``         -1    E_q[log p(x|z)], the observed sites, so that elbo = recon - rate
``complexity``    +1    -log p(x) - L(x) ln 2, Serra et al. (2020), L(x) a PNG/zlib length in bits
``regret``        +1    likelihood regret, Xiao, Yan and Amit (2020): the ELBO gained by re-fitting
                        the encoder to the example alone
``typicality``    +1    | -log p(x) - H |, Nalisnick et al. (2019) with M = 1, H the reference's
                        mean of -log p
================  ====  ==============================================================================

The sign (:data:`ANOMALY_SIGN`) says which way is anomalous: +1 where a larger value is more
anomalous, -1 where a smaller one is. :func:`detection_metrics` multiplies by it, so that for every
score a larger signed value means "more out-of-distribution", and gives ROC AUC, average precision and
the false-positive rate at 95% true-positive rate against a reference set (scikit-learn);
:func:`roc_figure` and :func:`histogram_figure` draw them, :func:`write_table` saves the table.

Works on every model/guide pair the importance machinery accepts
(:mod:`pyro_vae.objectives.importance`: every sample site in the plate ``data``), except ``regret``,
which needs a model object with an ``encoder`` to re-fit (:func:`likelihood_regret`).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro.poutine.util import site_is_subsample
from torch import nn

from .checkpoint import file_mode
from .errors import ConfigError, DataError
from .evaluate import log_likelihood
from .kernel import chunks, evaluating, per_point, sample_chunk, seeded, site_terms, traces
from .models.base import Model, as_model
from .objectives.importance import (
    DATA_PLATE,
    per_datum,
    site_log_prob,
    trace_log_weights,
)
from .progress import current, reporting, track

#: every score :func:`score` computes, in the order of its table's columns
SCORES: tuple[str, ...] = (
    "elbo",
    "log_px",
    "rate",
    "recon",
    "complexity",
    "regret",
    "typicality",
)

#: +1 where a larger value means more anomalous, -1 where a smaller value does.
#:
#: - ``elbo``, ``log_px``, ``recon`` (-1): the model explains an anomaly worse: a lower bound, a lower
#:   likelihood, a worse reconstruction.
#: - ``rate`` (+1): an input unlike the training data sends q(z|x) far from the prior. A heuristic:
#:   the rate is two-sided, and an encoder that maps anomalies closer to the prior than its
#:   training data ranks them last (a small VAE of the bundled digits did so for a held-out digit
#:   class, AUROC 0.24, and, with the Bernoulli likelihood, for uniform noise, 0.19; with a Gaussian
#:   likelihood noise got the larger rate, 0.98).
#: - ``complexity`` (+1): Serra et al.'s S(x) is a log-likelihood ratio of the compressor against the
#:   model; large when the model explains x worse than its complexity would suggest. Both are code
#:   lengths of the quantized data only under a likelihood that is a distribution over them
#:   (``discretized-logistic``, ``logistic-mixture``; ``bernoulli`` on binary data): it is refused
#:   for the others (a density is off by a constant per dimension; the ``bernoulli`` cross-entropy of
#:   grey levels ranked uniform noise below digits, AUROC 0.14).
#: - ``regret`` (+1): Xiao et al.: the amortised encoder is far from the best posterior for an input
#:   it was not trained on, so re-fitting gains much.
#: - ``typicality`` (+1): the distance of -log p(x) from the typical set's entropy estimate.
ANOMALY_SIGN: dict[str, float] = {
    "elbo": -1.0,
    "log_px": -1.0,
    "rate": 1.0,
    "recon": -1.0,
    "complexity": 1.0,
    "regret": 1.0,
    "typicality": 1.0,
}

# the scores that come out of one pass of the guide and the model (the same draws, so that
# elbo = recon - rate exactly wherever the rate is estimated by Monte Carlo)
_BOUND_TERMS = ("elbo", "recon", "rate")
# each stage draws from its own seed, derived from ``seed``, so that asking for a subset of the
# scores gives the same numbers as asking for all of them
_STAGE_SEED = {"bound": 0, "log_px": 1, "regret": 2}


# -- input checks -------------------------------------------------------------------------------------
def _as_data(model: Model, x: Any) -> torch.Tensor:
    """``x`` as a floating tensor on the model's device, or a one-line :class:`DataError`."""
    if not torch.is_tensor(x):
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as e:
            raise DataError(
                f"the data must be a tensor or numeric array of shape (N, ...), got "
                f"{type(x).__name__} ({e})"
            ) from None
    if x.dim() == 0 or x.shape[0] == 0:
        raise DataError(
            f"the data set is empty (shape {tuple(x.shape)}); pass at least one example"
        )
    if not x.is_floating_point():
        x = x.float()
    param = next(iter(model.parameters()), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    model.check_data(x)  # shape, and the likelihood's support (e.g. [0, 1] for Bernoulli)
    if not torch.isfinite(x).all():
        raise DataError("the data contain NaN or infinite values; clean or impute them first")
    return x


def _mode(progress: bool) -> str:
    """The progress mode of a stage: that of the command (:func:`pyro_vae.progress.reporting`),
    a bar where no command set one, nothing with ``progress=False``."""
    if not progress:
        return "off"
    return current() if current() != "off" else "bar"


def _check_reference(reference_log_px: Any) -> float:
    """H = mean of -log p over the reference, from its log p(x); one-line errors on bad input."""
    ref = np.asarray(
        reference_log_px.detach().cpu() if torch.is_tensor(reference_log_px) else reference_log_px,
        dtype=np.float64,
    ).ravel()
    if ref.size == 0:
        raise DataError(
            "reference_log_px is empty; pass log p(x) of in-distribution data, e.g. of the "
            "training set"
        )
    if not np.isfinite(ref).all():
        raise DataError(
            "reference_log_px contains NaN or infinite values; score the reference again with "
            "more importance samples"
        )
    return float(-ref.mean())


def _in_unit_interval(x: torch.Tensor) -> bool:
    return bool(float(x.min()) >= 0.0 and float(x.max()) <= 1.0)


def _has_encoder(model: Any) -> bool:
    return isinstance(model, nn.Module) and bool(_encoders(model))


def _chosen_scores(
    scores: Sequence[str] | None,
    model: Any,
    guide: Callable | None,
    x: torch.Tensor,
    has_reference: bool,
) -> list[str]:
    """The scores to compute, in the order of :data:`SCORES`.

    ``None`` means every score that applies: ``typicality`` needs ``reference_log_px``, ``regret`` a
    model object with an encoder, ``complexity`` data in [0, 1]. A score named explicitly that does
    not apply is a one-line error instead.
    """
    if scores is None:
        chosen = [s for s in SCORES if s != "typicality" or has_reference]
        if guide is not None or not _has_encoder(model):
            chosen.remove("regret")
        # ``model`` is already a Model here (a plain pair wrapped with its guide)
        if not _in_unit_interval(x) or complexity_refused(model, None, x) is not None:
            chosen.remove("complexity")
        return chosen
    if isinstance(scores, str):
        scores = (scores,)
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ConfigError(f"unknown score {unknown[0]!r}; choose among {', '.join(SCORES)}")
    if not scores:
        raise ConfigError(f"no score asked for; choose among {', '.join(SCORES)}")
    if "typicality" in scores and not has_reference:
        raise ConfigError(
            "the typicality score needs reference_log_px, log p(x) of in-distribution data (e.g. "
            "of the training set, from pyro_vae.log_likelihood); pass it or drop 'typicality'"
        )
    if "regret" in scores and (guide is not None or not _has_encoder(model)):
        raise ConfigError(
            f"likelihood regret re-fits the model's encoder, but {type(model.recorded()).__name__} has "
            "no `encoder` module (a plain model/guide pair has none); drop 'regret'"
        )
    if "complexity" in scores and not _in_unit_interval(x):
        raise DataError(
            f"the complexity score quantises pixels in [0, 1] to 8 bits, but the data range over "
            f"[{float(x.min()):g}, {float(x.max()):g}]; rescale them to [0, 1] or drop 'complexity'"
        )
    if "complexity" in scores:
        reason = complexity_refused(model, None, x)
        if reason is not None:
            raise ConfigError(
                f"the complexity score subtracts a compressor's code length from -log p(x), which "
                f"is a code length only under a likelihood of the quantized data: {reason}"
            )
    return [s for s in SCORES if s in scores]


def complexity_refused(model: Any, guide: Callable | None, x: torch.Tensor) -> str | None:
    """Why the complexity score does not apply to ``model`` on ``x``: -log p(x) is not a code length
    of the quantized data (:func:`pyro_vae.units.quantized_dims`); None when it applies."""
    from .units import NotQuantized, quantized_dims

    model = as_model(model, guide, caller="score")
    x = _as_data(model, x)  # data the model cannot score at all fail here, in one line
    try:
        quantized_dims(model.model, x)
    except NotQuantized as e:
        return str(e)
    return None


# -- random numbers ---------------------------------------------------------------------------------
def _stage_seed(seed: int, stage: str, batch: int = 0) -> int:
    # distinct, reproducible streams per stage and batch
    return int(seed) * 1_000_003 + _STAGE_SEED[stage] * 100_003 + batch


# -- the bound's terms per example --------------------------------------------------------------------
def _bound_terms(
    model: Model, xb: torch.Tensor, num_samples: int, chunk: int, nest: int, data_plate: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example means over ``num_samples`` draws of (log w, recon, rate), in chunks of ``chunk``
    samples so that memory stays bounded whatever ``num_samples`` is.

    ``recon`` sums log p over the observed sites; ``rate`` sums KL(q || p) over the latent sites that
    both the model and the guide sample: closed form where that is the site's term of the ELBO
    (:func:`~pyro_vae.kernel.analytic_kl_sites`, as in
    :func:`~pyro_vae.evaluate.latent_statistics`), else the Monte Carlo log q - log p at the draw.
    """
    sums = [torch.zeros(xb.shape[0], device=xb.device, dtype=xb.dtype) for _ in range(3)]
    for k in chunks(num_samples, chunk):
        model_trace, guide_trace = traces(model, xb, k, nest, data_plate)
        lw = trace_log_weights(model_trace, guide_trace, nest, data_plate)
        recon, rate = torch.zeros_like(lw), torch.zeros_like(lw)
        for term in site_terms(model_trace, guide_trace, nest, data_plate):
            if term.guide is None:
                recon = recon + term.value
            else:
                rate = rate + term.value
        for i, t in enumerate((lw, recon, rate)):
            # a (1, B) term (the same for every draw, e.g. a closed-form KL) counts k times
            sums[i] = sums[i] + t.expand(k, -1).sum(0).to(sums[i])
    return tuple(s / num_samples for s in sums)  # type: ignore[return-value]


def _rows_per_batch(x: torch.Tensor, samples: int, batch_size: int, max_elements: int) -> int:
    """Rows per batch such that ``samples`` draws of decoded data hold at most ``max_elements``
    numbers (at least one row)."""
    return max(1, min(batch_size, max_elements // (samples * per_point(x))))


# -- likelihood regret --------------------------------------------------------------------------------
def _encoders(model: nn.Module) -> dict[str, nn.Module]:
    """The modules named ``encoder`` in the model (``encoder``, ``m1.encoder``...), by path.

    For VAE, HierarchicalVAE (q(z1|x); q(z2|z1) reads z1, not x), CVAE and M2 this is the one
    ``encoder``; for M1+M2 (:class:`~pyro_vae.models.StackedM2`) it is M1's encoder of x and M2's
    encoder of z1, so that both amortised posteriors on the way from x to z are re-fitted.
    """
    return {
        name: module
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] == "encoder" and isinstance(module, nn.Module)
    }


class _Offsets:
    """Per-example offsets ``delta`` (B, feature_dim) added to the output of each encoder, while
    :attr:`active` (only inside the guide: a VampPrior also calls the encoder, on its
    pseudo-inputs, inside the model, and must stay the prior it was).

    Forward hooks rather than a replaced attribute: the model is never modified, and removing the
    hooks restores it exactly.
    """

    def __init__(self, encoders: Mapping[str, nn.Module], rows: int, device: torch.device) -> None:
        self.active = False
        self.rows = rows
        self.deltas: dict[str, torch.Tensor] = {}
        self.handles: list[Any] = []
        for name, enc in encoders.items():
            dim = getattr(enc, "feature_dim", None)
            if not isinstance(dim, int):
                raise ConfigError(
                    f"likelihood regret adds an offset to the output of {name!r}, which needs an "
                    "integer attribute `feature_dim`; drop 'regret' or give the encoder one"
                )
            param = next(iter(enc.parameters()), None)
            dtype = param.dtype if param is not None else torch.get_default_dtype()
            delta = torch.zeros(rows, dim, device=device, dtype=dtype, requires_grad=True)
            self.deltas[name] = delta
            self.handles.append(enc.register_forward_hook(self._hook(name, delta)))

    def _hook(self, name: str, delta: torch.Tensor) -> Callable:
        def add(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            if not self.active:
                return None
            if output.dim() < 2 or output.shape[-2:] != delta.shape:
                raise ConfigError(
                    f"likelihood regret needs {name!r} to return (..., batch, feature_dim) = "
                    f"(..., {self.rows}, {delta.shape[-1]}) inside the guide, but it returned "
                    f"{tuple(output.shape)}; drop 'regret' for this model"
                )
            # broadcasts over leading particle (or enumeration) dims: delta is per example
            return output + delta

        return add

    def guide(self, guide_fn: Callable) -> Callable:
        def with_offsets(*args: Any, **kwargs: Any) -> Any:
            self.active = True
            try:
                return guide_fn(*args, **kwargs)
            finally:
                self.active = False

        return with_offsets

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def _regret_objective(
    model: Model, xb: torch.Tensor, num_samples: int, nest: int, data_plate: str
) -> torch.Tensor:
    r"""A surrogate whose gradient is that of :math:`\sum_n \mathrm{ELBO}(x_n)`, the K-sample ELBO.

    Reparameterised sites pass gradients through their draws; a site that is not (M2's label) adds
    the score-function (REINFORCE) term :math:`\log q(y) \cdot \mathrm{stop}(\log w - b)`, as
    Pyro's ELBOs do for such sites, with the mean of the other draws' log weights as baseline ``b``
    (leave-one-out, so the gradient stays unbiased; none with one draw).
    """
    model_trace, guide_trace = traces(model, xb, num_samples, nest, data_plate)
    lw = trace_log_weights(model_trace, guide_trace, nest, data_plate)  # (K, B)
    surrogate = lw.mean(0)
    k = lw.shape[0]
    for site in guide_trace.nodes.values():
        if site["type"] != "sample" or site["is_observed"] or site_is_subsample(site):
            continue
        if site["fn"].has_rsample:
            continue
        lq = per_datum(site_log_prob(site, data_plate), site, nest, data_plate)[0]
        signal = lw.detach()
        if k > 1:
            signal = signal - (signal.sum(0, keepdim=True) - signal) / (k - 1)
        surrogate = surrogate + (lq * signal).mean(0)
    return surrogate.sum()


def _seeded_elbo(
    model: Model, xb: torch.Tensor, num_samples: int, nest: int, data_plate: str, *, seed: int
) -> torch.Tensor:
    """The per-example ``num_samples``-sample ELBO of a batch on the draws of ``seed``."""
    with seeded(seed, xb.device):
        terms = _bound_terms(model, xb, num_samples, num_samples, nest, data_plate)
    return terms[0]


def _check_regret_options(steps: Any, lr: Any) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ConfigError(f"the regret's optimisation steps must be an integer >= 0, got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"the regret's learning rate must be a positive number, got {lr!r}")


def likelihood_regret(
    model: nn.Module,
    x: torch.Tensor,
    *,
    num_samples: int = 16,
    steps: int = 50,
    lr: float = 0.1,
    batch_size: int = 256,
    seed: int = 0,
    max_elements: int = 2**24,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
    progress: bool = False,
) -> torch.Tensor:
    r"""Likelihood regret per example (Xiao, Yan and Amit 2020, 'Likelihood regret: an
    out-of-distribution detection score for variational auto-encoder'), shape ``(N,)``, nats:

    .. math:: \mathrm{LR}(x) = \mathcal{L}(x; \phi^*(x), \theta) - \mathcal{L}(x; \phi, \theta),

    the ELBO :math:`\mathcal{L}` with the encoder re-fitted to ``x`` alone (:math:`\phi^*(x)`, the
    decoder :math:`\theta` fixed) minus the ELBO with the amortised encoder :math:`\phi`. Where Xiao
    et al. re-train the encoder's weights on each example, here a free offset
    :math:`\delta_n` (``feature_dim`` numbers, initialised at 0) is added to the features every
    module named ``encoder`` gives the guide for example n (:func:`_encoders`), and
    :math:`\delta` is optimised with Adam (``steps`` steps, learning rate ``lr`` decaying linearly to
    0, fresh draws at every step) on the sum of the batch's ``num_samples``-sample ELBOs: example
    n's ELBO depends on :math:`\delta_n` alone, so this is the per-example optimisation, batched.
    Both ELBOs are then evaluated on the same
    ``num_samples`` draws (the same seed: common random numbers), so that the difference is not
    drowned in Monte Carlo noise. It is >= 0 when the optimisation improved the bound, up to that
    noise; ``steps=0`` gives exactly 0. The model's parameters, modes and modules are left as they
    were (the offsets live in forward hooks, removed afterwards; no parameter gets a gradient).
    """
    _check_regret_options(steps, lr)
    _check_count("num_samples", num_samples)
    model = as_model(model, caller="likelihood_regret")
    x = _as_data(model, x)
    encoders = _encoders(model)
    if not encoders:
        raise ConfigError(
            f"likelihood regret re-fits the model's encoder, but {type(model.recorded()).__name__} has "
            "no `encoder` module; drop 'regret'"
        )
    rows = _rows_per_batch(x, num_samples, batch_size, max_elements)
    out = []
    batches = x.split(rows)
    with evaluating(model):
        tracked = track(batches, total=len(batches), desc="regret", mode=_mode(progress))
        for b, xb in enumerate(tracked):
            offsets = _Offsets(encoders, xb.shape[0], xb.device)
            try:
                shifted = as_model(model.model, guide=offsets.guide(model.guide))
                eval_seed = _stage_seed(seed, "regret", 2 * b)
                args = (shifted, xb, num_samples, max_plate_nesting, data_plate)
                before = _seeded_elbo(*args, seed=eval_seed)
                if steps:
                    deltas = list(offsets.deltas.values())
                    opt = torch.optim.Adam(deltas, lr=lr)
                    # the step size decays linearly to 0, so that the last iterate settles at the
                    # optimum instead of jittering around it at the scale of lr
                    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 - t / steps)
                    with seeded(eval_seed + 1, xb.device), torch.enable_grad():
                        for _ in range(steps):
                            loss = -_regret_objective(*args)
                            # gradients for the offsets only: the model's parameters stay untouched
                            grads = torch.autograd.grad(loss, deltas, allow_unused=True)
                            for d, g in zip(deltas, grads):
                                d.grad = torch.zeros_like(d) if g is None else g
                            opt.step()
                            decay.step()
                # the same seed as `before`: the same draws, common random numbers
                after = _seeded_elbo(*args, seed=eval_seed)
            finally:
                offsets.remove()
            out.append((after - before).detach())
    return torch.cat(out)


# -- input complexity ---------------------------------------------------------------------------------
def _png_bytes(image: np.ndarray) -> bytes:
    """Lossless PNG of an 8-bit image (H, W), (H, W, 3) or (H, W, 4), at maximum compression."""
    from PIL import Image

    buf = io.BytesIO()
    # optimize=True: zlib level 9 and the encoder's extra pass for the smallest file
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _as_8bit_image(q: np.ndarray) -> np.ndarray | None:
    """One 8-bit example as an image Pillow can write, or ``None`` if it is not an image.

    (H, W) is grey; (C, H, W) with C = 1, 3 or 4 is grey, RGB or RGBA; other channel counts are
    stacked vertically into one grey image (C * H, W).
    """
    if q.ndim == 2:
        return q
    if q.ndim == 3:
        c = q.shape[0]
        if c == 1:
            return q[0]
        if c in (3, 4):
            return q.transpose(1, 2, 0)
        return q.reshape(c * q.shape[1], q.shape[2])
    return None


def complexity_bits(x: torch.Tensor | np.ndarray) -> np.ndarray:
    r"""L(x): the length in bits of each example compressed losslessly, shape ``(N,)``.

    The complexity estimate of Serra et al. (2020): each example is quantised to 8 bits,
    ``round(255 x)`` for x in [0, 1], and compressed; images (examples of shape (H, W) or
    (C, H, W), see :func:`_as_8bit_image`) as PNG through Pillow at maximum compression (the paper's
    PNG compressor), other data (e.g. (D,)) as their bytes with zlib at level 9. L(x) is 8 times the
    number of bytes of the whole file, headers included: the PNG signature and chunk headers are a
    constant (for one image size) that shifts every score alike and changes no ranking.
    """
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    if a.ndim == 0 or a.shape[0] == 0:
        raise DataError(f"the data set is empty (shape {a.shape}); pass at least one example")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise DataError("the data contain NaN or infinite values; clean or impute them first")
    if a.min() < 0 or a.max() > 1:
        raise DataError(
            f"the complexity estimate quantises values in [0, 1] to 8 bits, but the data range over "
            f"[{a.min():g}, {a.max():g}]; rescale them to [0, 1] (e.g. divide 8-bit images by 255)"
        )
    q = np.rint(a * 255.0).astype(np.uint8)
    bits = np.empty(q.shape[0], dtype=np.float64)
    for i, example in enumerate(q):
        image = _as_8bit_image(example)
        data = _png_bytes(image) if image is not None else zlib.compress(example.tobytes(), 9)
        bits[i] = 8.0 * len(data)
    return bits


# -- the table ----------------------------------------------------------------------------------------
def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def score(
    model: Any,
    x: torch.Tensor | np.ndarray,
    *,
    guide: Callable | None = None,
    num_samples: int = 1000,
    elbo_samples: int = 16,
    batch_size: int = 256,
    regret_steps: int = 50,
    regret_lr: float = 0.1,
    reference_log_px: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    scores: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    max_elements: int = 2**24,
    max_plate_nesting: int = 1,
    data_plate: str = DATA_PLATE,
) -> dict[str, np.ndarray]:
    r"""Per-example scores of ``x`` under ``model``: ``{name: array (N,)}`` in the order of ``x``,
    nats per example, for the names of :data:`SCORES` asked for (``scores``; ``None``: every one that
    applies, see below). Larger or smaller means anomalous as :data:`ANOMALY_SIGN` says.

    - ``elbo``: :math:`\frac{1}{S}\sum_{s=1}^{S} \log w_s`, :math:`\log w_s = \log p(x, z_s) -
      \log q(z_s|x)`, :math:`z_s \sim q(z|x)`, with S = ``elbo_samples``.
    - ``log_px``: :math:`\log \frac{1}{K}\sum_{k=1}^{K} w_k` with K = ``num_samples``
      (:func:`~pyro_vae.evaluate.log_likelihood`: chunked, memory bounded by ``max_elements``).
    - ``rate``: :math:`\mathrm{KL}(q(z|x) \| p(z))` summed over latent sites: closed form where it is
      the ELBO's term (:func:`~pyro_vae.objectives.kl.closed_form_kl_sites`), else the mean of
      :math:`\log q(z_s|x) - \log p(z_s)` over the S draws.
    - ``recon``: :math:`\frac{1}{S}\sum_s \log p(x|z_s)` over the observed sites, on the same draws
      as ``elbo``, so that elbo = recon - rate (exactly where the rate is Monte Carlo, up to its
      Monte Carlo error where it is closed form).
    - ``complexity``: the score of Serra et al. (2020), :math:`S(x) = -\log_2 p_M(x) - L(x)` bits
      with L(x) the compressed length (:func:`complexity_bits`): the log-likelihood ratio
      :math:`\log_2 p_0(x) - \log_2 p_M(x)` of a lossless compressor seen as a universal model,
      :math:`p_0(x) \propto 2^{-L(x)}`, against the model. In nats: ``-log_px - L(x) ln 2``; larger
      is more anomalous (the model explains x worse than a generic compressor does). The paper
      divides by the number of dimensions, which for data of one shape changes no ranking. Needs
      data in [0, 1], and a likelihood that is a distribution over the quantized data (see
      :data:`ANOMALY_SIGN` and :func:`pyro_vae.units.quantized_dims`).
    - ``regret``: likelihood regret (:func:`likelihood_regret`) with ``elbo_samples`` draws,
      ``regret_steps`` Adam steps of learning rate ``regret_lr`` on per-example encoder offsets.
      Needs a model object with an ``encoder``.
    - ``typicality``: :math:`|-\log p(x) - \hat H|` with :math:`\hat H` the mean of
      :math:`-\log p` over ``reference_log_px`` (log p(x) of in-distribution data, e.g. the training
      set): Nalisnick et al. (2019, 'Detecting out-of-distribution inputs to deep generative models
      using typicality'), whose test averages -log p over a batch of M inputs; per example
      M = 1. Needs ``reference_log_px``.

    ``model`` is an object with Pyro ``model``/``guide`` methods (any :class:`~pyro_vae.Model`), or a
    Pyro model function with ``guide=``; every sample site must lie in the plate ``data_plate``.
    ``scores=None`` computes every score that applies (typicality with a reference, regret with an
    encoder, complexity on data in [0, 1]); naming one that does not apply is an error. Everything
    runs with the model in eval mode and without gradients (but for the regret's offsets), in batches
    of at most ``batch_size`` rows and ``max_elements`` decoded numbers; modes are restored afterwards.
    Each stage draws from torch's generator seeded from ``seed`` (the caller's random state is
    saved and restored): the same ``seed``, ``batch_size`` and device give the same numbers.
    """
    for name, value in (
        ("num_samples", num_samples),
        ("elbo_samples", elbo_samples),
        ("batch_size", batch_size),
        ("max_elements", max_elements),
    ):
        _check_count(name, value)
    model = as_model(model, guide, caller="score")
    x = _as_data(model, x)
    chosen = _chosen_scores(scores, model, guide, x, reference_log_px is not None)
    entropy = _check_reference(reference_log_px) if "typicality" in chosen else None
    if "regret" in chosen:  # before the slow stages, not after them
        _check_regret_options(regret_steps, regret_lr)
    need = set(chosen)
    if need & {"complexity", "typicality"}:
        need.add("log_px")

    out: dict[str, torch.Tensor | np.ndarray] = {}
    if need & set(_BOUND_TERMS):
        rows = _rows_per_batch(x, 1, batch_size, max_elements)
        chunk = sample_chunk(x, min(rows, x.shape[0]), elbo_samples, max_elements)
        parts: list[tuple[torch.Tensor, ...]] = []
        with evaluating(model):
            batches = x.split(rows)
            tracked = track(batches, total=len(batches), desc="elbo", mode=_mode(progress))
            for b, xb in enumerate(tracked):
                with seeded(_stage_seed(seed, "bound", b), xb.device):
                    terms = _bound_terms(
                        model, xb, elbo_samples, chunk, max_plate_nesting, data_plate
                    )
                parts.append(terms)
        for i, name in enumerate(_BOUND_TERMS):
            out[name] = torch.cat([p[i] for p in parts])
    if "log_px" in need:
        with seeded(_stage_seed(seed, "log_px"), x.device), reporting(_mode(progress)):
            out["log_px"] = log_likelihood(
                model,
                x,
                num_samples,
                batch_size=batch_size,
                max_elements=max_elements,
                max_plate_nesting=max_plate_nesting,
                data_plate=data_plate,
            )
    if "complexity" in need:
        bits = torch.as_tensor(complexity_bits(x), dtype=torch.float64)
        out["complexity"] = -out["log_px"].cpu().double() - bits * math.log(2.0)
    if "regret" in need:
        out["regret"] = likelihood_regret(
            model,
            x,
            num_samples=elbo_samples,
            steps=regret_steps,
            lr=regret_lr,
            batch_size=batch_size,
            seed=seed,
            max_elements=max_elements,
            max_plate_nesting=max_plate_nesting,
            data_plate=data_plate,
            progress=progress,
        )
    if "typicality" in need:
        out["typicality"] = (-out["log_px"].cpu().double() - entropy).abs()
    return {
        name: np.asarray(
            out[name].detach().cpu().double().numpy() if torch.is_tensor(out[name]) else out[name],
            dtype=np.float64,
        )
        for name in chosen
    }


# -- detection metrics --------------------------------------------------------------------------------
def _signed(name: str, values: Any, which: str) -> np.ndarray:
    if name not in ANOMALY_SIGN:
        raise ConfigError(
            f"unknown score {name!r}: its anomalous direction is not known; scores are "
            f"{', '.join(SCORES)}"
        )
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise DataError(f"the {which} set has no {name!r} scores; score at least one example")
    if not np.isfinite(a).all():
        raise DataError(
            f"the {which} set's {name!r} scores contain NaN or infinite values; score it again "
            "(e.g. with more importance samples) or drop that score"
        )
    return ANOMALY_SIGN[name] * a


def _common(in_scores: Mapping[str, Any], out_scores: Mapping[str, Any]) -> list[str]:
    common = [name for name in in_scores if name in out_scores]
    if not common:
        raise DataError(
            f"the two score tables share no score (in-distribution: {', '.join(in_scores) or '-'}; "
            f"out-of-distribution: {', '.join(out_scores) or '-'}); score both with the same scores"
        )
    return common


def _labelled(
    name: str, in_scores: Mapping[str, Any], out_scores: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (1: out-of-distribution, the positive class) and signed scores of both sets."""
    a = _signed(name, in_scores[name], "in-distribution")
    b = _signed(name, out_scores[name], "out-of-distribution")
    return np.concatenate([np.zeros(a.size), np.ones(b.size)]), np.concatenate([a, b])


def detection_metrics(
    in_scores: Mapping[str, Any], out_scores: Mapping[str, Any]
) -> dict[str, dict[str, float]]:
    """For each score in both tables, how well it separates ``out_scores`` (out-of-distribution,
    the positive class) from ``in_scores``, the values multiplied by :data:`ANOMALY_SIGN` so that
    larger means more anomalous:

    - ``auroc``: the area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`), the
      probability that a random anomaly scores above a random normal example (ties count half);
    - ``auprc``: average precision (:func:`sklearn.metrics.average_precision_score`), the area under
      the precision-recall curve with the anomalies as positives (depends on the sets' sizes);
    - ``fpr_at_95_tpr``: the smallest false-positive rate among the thresholds of
      :func:`sklearn.metrics.roc_curve` whose true-positive rate is at least 0.95.

    An empty set, a score with NaN or infinite values, or tables with no score in common are a
    one-line :class:`DataError`.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

    metrics: dict[str, dict[str, float]] = {}
    for name in _common(in_scores, out_scores):
        y, s = _labelled(name, in_scores, out_scores)
        # every threshold, so that the first one reaching 95% TPR is never dropped as collinear
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        metrics[name] = {
            "auroc": float(roc_auc_score(y, s)),
            "auprc": float(average_precision_score(y, s)),
            "fpr_at_95_tpr": float(fpr[tpr >= 0.95].min()),
        }
    return metrics


# -- figures and the table ----------------------------------------------------------------------------
@contextlib.contextmanager
def _atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that replaces ``path`` once written, so that
    an interrupted write never leaves half a file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, file_mode())  # mkstemp's 0o600 would outlive the rename
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _panels(n: int) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    cols = min(n, 4)
    rows = math.ceil(n / cols)
    # a Figure without pyplot: no global state, Agg canvas, nothing ever opens a window
    fig = Figure(figsize=(3.4 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def _save_figure(fig: Any, path: str | Path) -> Path:
    fig.tight_layout()
    with _atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)


def roc_figure(
    in_scores: Mapping[str, Any], out_scores: Mapping[str, Any], path: str | Path
) -> Path:
    """ROC curves, one panel per score both tables hold (out-of-distribution positive, values
    signed by :data:`ANOMALY_SIGN`), with the AUROC in the legend and the chance diagonal."""
    from sklearn.metrics import roc_auc_score, roc_curve

    names = _common(in_scores, out_scores)
    fig, axes = _panels(len(names))
    for ax, name in zip(axes, names):
        y, s = _labelled(name, in_scores, out_scores)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(y, s):.3f}")
        ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
        ax.set(title=name, xlabel="false-positive rate", ylabel="true-positive rate")
        ax.set(xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize=8)
    return _save_figure(fig, path)


def histogram_figure(
    in_scores: Mapping[str, Any], out_scores: Mapping[str, Any], path: str | Path
) -> Path:
    """Histograms of each score both tables hold (raw values, not signed), the in-distribution and
    out-of-distribution sets overlaid on common bins, as densities (the sets may differ in size)."""
    names = _common(in_scores, out_scores)
    fig, axes = _panels(len(names))
    for ax, name in zip(axes, names):
        a = _signed(name, in_scores[name], "in-distribution") * ANOMALY_SIGN[name]
        b = _signed(name, out_scores[name], "out-of-distribution") * ANOMALY_SIGN[name]
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
        ax.hist(a, bins=bins, density=True, alpha=0.6, label="in-distribution")
        ax.hist(b, bins=bins, density=True, alpha=0.6, label="out-of-distribution")
        way = "higher" if ANOMALY_SIGN[name] > 0 else "lower"
        ax.set(title=f"{name} ({way} = anomalous)", xlabel=f"{name} (nats)", ylabel="density")
        ax.legend(fontsize=8)
    return _save_figure(fig, path)


def write_table(scores: Mapping[str, Any], path: str | Path) -> Path:
    """Write the table of :func:`score` to ``path``: ``.csv`` (a header ``index,<scores>`` and one
    row per example, the index its position in the data set) or ``.npz`` (one array per score),
    chosen by the suffix; written to a temporary file that then replaces ``path``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise ConfigError(
            f"cannot write a score table to {path.name!r}: the file must end in .csv or .npz"
        )
    if not scores:
        raise DataError("the score table is empty; score at least one score")
    columns = {name: np.asarray(v, dtype=np.float64).ravel() for name, v in scores.items()}
    lengths = {v.size for v in columns.values()}
    if len(lengths) != 1:
        raise DataError(
            "the score columns have different lengths "
            f"({', '.join(f'{k}: {v.size}' for k, v in columns.items())}); score one data set"
        )
    with _atomic_path(path) as tmp:
        if suffix == ".npz":
            np.savez(tmp, **columns)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(",".join(["index", *columns]) + "\n")
                for i, row in enumerate(zip(*columns.values())):
                    # repr: the shortest decimal that reads back as the same float
                    f.write(",".join([str(i), *(repr(float(v)) for v in row)]) + "\n")
    return path


__all__ = [
    "ANOMALY_SIGN",
    "SCORES",
    "complexity_bits",
    "detection_metrics",
    "histogram_figure",
    "likelihood_regret",
    "roc_figure",
    "score",
    "write_table",
]
