"""Representations: what q(z|x) says about each example, and how much of its label a linear model
reads from it.

- :func:`encode` / :func:`write_encoding`: the mean and standard deviation of q(z|x) per example,
  as NumPy arrays (a ``.npz`` file on disk).
- :func:`linear_probe` / :func:`pixel_probe`: logistic regression on the latent means (or on raw
  pixels, the baseline) of class-balanced training subsets of several sizes, scored on a test set;
  :func:`logistic_probe` is the same on features computed elsewhere.
- :func:`latent_kl_per_dim`, :func:`prior_draws`, :func:`prior_quantiles`, :func:`prior_centre`,
  :func:`decoder_sensitivity`: per-dimension summaries of the latent against its prior, for the
  latent traversal figure (:func:`pyro_vae.plots.traversal`); the last two need no data.

The latent these functions read ("the traversed latent") is the one ``model.latent_mean`` points at:
z for the VAE, z1 for the hierarchical VAE, and for the label models (CVAE, M2, M1+M2), whose
``latent_mean`` is ``[z, onehot(y)]``, the z part only (see :func:`encode`).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .boundary import as_data
from .errors import ConfigError, DataError
from .kernel import evaluating, seeded
from .models.base import Model, as_model

#: draws of q(z|x) per example that estimate its standard deviation where q has none in closed form
SCALE_SAMPLES = 256
#: draws of the prior whose empirical marginals stand in for a prior that is not N(0, I)
PRIOR_DRAWS = 2000
#: training subset sizes the probe fits by default (None: the whole training set)
PROBE_COUNTS: tuple[int | None, ...] = (100, 1000, None)
#: lbfgs iterations of the probe's logistic regression
PROBE_MAX_ITER = 1000


# -- the traversed latent -------------------------------------------------------------------------
def _device(model: nn.Module, x: torch.Tensor) -> torch.device:
    """Where the model's parameters live (batches are moved there), else where the data are."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return x.device


def _float_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 for a model without any)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _positive_int(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"{what} must be an integer of at least {low}, got {value!r}")
    return int(value)


def _stddev(q: Any, samples: int) -> tuple[torch.Tensor, int]:
    """q's standard deviation per dimension and how many draws estimated it (0: closed form).

    Flows have no closed form: the sample standard deviation of ``samples`` draws, taken a few
    draws at a time so that memory stays at a few batches' worth of flow activations.
    """
    try:
        return q.stddev, 0
    except NotImplementedError:
        pass
    total = total_sq = None
    done = 0
    while done < samples:
        k = min(32, samples - done)
        z = q.sample((k,)).double()
        s, s2 = z.sum(0), z.pow(2).sum(0)
        total = s if total is None else total + s
        total_sq = s2 if total_sq is None else total_sq + s2
        done += k
    var = (total_sq - total.pow(2) / samples) / (samples - 1)
    return var.clamp_min(0).sqrt(), samples


def _encode_batch(
    model: Model, xb: torch.Tensor, scales: bool, scale_samples: int
) -> dict[str, torch.Tensor | int]:
    """Mean (and scale) of the traversed latent for one batch, and the model's extra outputs (the
    label models' predicted labels): :meth:`pyro_vae.Model.representation`."""
    mean, q, extra = model.representation(xb)
    out: dict[str, torch.Tensor | int] = {"mean": mean, **extra}
    if scales and q is not None:
        scale, used = _stddev(q, scale_samples)
        if scale.shape != mean.shape:
            raise ConfigError(
                f"{type(model.recorded()).__name__}.encode(x) gives a distribution of shape "
                f"{tuple(scale.shape)} but latent_mean(x) has shape {tuple(mean.shape)}; "
                "encode must return q of the latent that latent_mean summarises"
            )
        out["scale"], out["scale_samples"] = scale.to(mean.dtype), used
    return out


def _as_labels(labels: Any, n: int, what: str) -> np.ndarray:
    """Integer labels as a 1-D NumPy array of length ``n``, else a one-line :class:`DataError`."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{what} must be one label per example, shape ({n},), got shape {arr.shape}; pass the "
            "labels of these examples"
        )
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{what} must be integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def encode(
    model: Any,
    x: torch.Tensor,
    labels: torch.Tensor | np.ndarray | None = None,
    batch_size: int = 256,
    *,
    scales: bool = True,
    scale_samples: int = SCALE_SAMPLES,
    seed: int | None = 0,
    guide: Callable | None = None,
) -> dict[str, np.ndarray]:
    """The mean and standard deviation of q(z|x) for each example of ``x``, in the data's order.

    ``model`` is a model object, or a Pyro model function given with its guide function
    (``guide=``, as for :func:`~pyro_vae.evaluate.log_likelihood`), whose one latent site is read.

    Returns NumPy arrays:

    - ``mean`` ``(N, D)``: ``model.latent_mean(x)``, the point the figures and reconstructions use
      (for the flow guides the base mean pushed through the flow, a deterministic summary; for a
      guide whose q has no mean and which does not say otherwise, the mean of 64 draws, see
      :meth:`AmortizedGuide.mean <pyro_vae.guides.AmortizedGuide.mean>`). For the hierarchical VAE
      it is z1's. For the label models (CVAE, M2, M1+M2) it is the z part only (``D`` is
      ``model.latent_dim``), inferred as ``latent_mean(x)`` infers it, with the label the model
      predicts; the ``labels`` passed here never enter q, so the encoding of an example does not
      depend on its label.
    - ``scale`` ``(N, D)`` (with ``scales``, for models with ``encode(x)``): the standard deviation of
      each coordinate of q(z|x) (``q.stddev``; the marginal one for the low-rank guide). Flows have
      none in closed form: it is then the sample standard deviation of ``scale_samples`` draws.
    - ``scale_samples`` ``()``: 0 when ``scale`` is exact, else the draws per example behind it.
    - ``predicted_labels`` ``(N,)`` (label models only): the label z was inferred with.
    - ``labels`` ``(N,)``: the ``labels`` given, passed through.

    The model runs in eval mode without gradients, ``batch_size`` examples at a time (each batch
    moved to the model's device, so ``x`` may stay on the CPU); its mode is restored afterwards.
    Sampled estimates are drawn under ``seed`` (None: the global random state), so they repeat.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    scale_samples = _positive_int(scale_samples, "scale_samples", low=2)
    model = as_model(model, guide, caller="encode", pair=guide is not None)
    # wrong type, shape or dtype, NaN, values outside the likelihood's support: one line
    x = as_data(model, x, "encode")
    given = None if labels is None else _as_labels(labels, x.shape[0], "labels")
    device = _device(model, x)
    parts: dict[str, list[np.ndarray]] = {}
    used = 0
    with evaluating(model), seeded(seed):
        for xb in x.split(batch_size):
            batch = _encode_batch(model, xb.to(device), scales, scale_samples)
            used = int(batch.pop("scale_samples", used))
            for key, t in batch.items():
                parts.setdefault(key, []).append(t.detach().cpu().numpy())
    out = {key: np.concatenate(chunks) for key, chunks in parts.items()}
    if not np.isfinite(out["mean"]).all():
        raise DataError(
            "the latent means of q(z|x) are not finite for some examples: the model's weights "
            "overflow (a damaged or diverged run); retrain it"
        )
    if "scale" in out:
        out["scale_samples"] = np.asarray(used, dtype=np.int64)
    if given is not None:
        out["labels"] = given
    return out


def write_encoding(enc: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write :func:`encode`'s arrays to a ``.npz`` file (read back with ``numpy.load``).

    Written atomically (a crash leaves the old file or the new one); the directory is created.
    """
    from .safety import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"an encoding is written as .npz, not {path.name!r}; name the file *.npz")
    arrays = {str(k): np.asarray(v) for k, v in enc.items()}
    if not arrays:
        raise ConfigError("there is nothing to write: the encoding has no arrays")
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))
    return path


# -- per-dimension summaries against the prior ------------------------------------------------------
def _standard_normal(p: Any) -> bool:
    """Whether ``p`` is N(0, I) (a Normal, possibly wrapped in Independent, with loc 0 and scale 1)."""
    from torch.distributions import Independent, Normal

    while isinstance(p, Independent):
        p = p.base_dist
    return isinstance(p, Normal) and bool((p.loc == 0).all() and (p.scale == 1).all())


def prior_is_standard_normal(model: Any) -> bool:
    """Whether the traversed latent's prior is N(0, I): the VAE's or label models' ``normal`` prior.

    Never for the hierarchical VAE, whose z1 has the marginal of p(z2) p(z1|z2).
    """
    prior = as_model(model, caller="prior_is_standard_normal", pair=False).latent_prior()
    return prior is not None and _standard_normal(prior)


def prior_draws(model: Any, n: int = PRIOR_DRAWS, seed: int | None = 0) -> torch.Tensor:
    """``n`` draws ``(n, D)`` of the traversed latent from its prior, under ``seed``.

    p(z) for the VAE and the label models (their z part), and for the hierarchical VAE z1 from
    p(z2) p(z1|z2), its marginal prior (:meth:`pyro_vae.Model.latent_prior_sample`).
    """
    n = _positive_int(n, "the number of prior draws")
    model = as_model(model, caller="prior_draws", pair=False)
    with evaluating(model), seeded(seed):
        model.latent_prior()  # a model without prior() is refused in one line
        return model.latent_prior_sample(n)


def prior_quantiles(
    model: Any, probs: torch.Tensor, num_draws: int = PRIOR_DRAWS, seed: int | None = 0
) -> torch.Tensor:
    """The quantiles ``(len(probs), D)`` of each dimension's prior marginal at probabilities
    ``probs``: ``Normal(0, 1).icdf`` for a standard-normal prior, else the empirical quantiles of
    ``num_draws`` draws (:func:`prior_draws`) under ``seed``."""
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.ndim != 1 or not bool(((probs > 0) & (probs < 1)).all()):
        raise ConfigError("quantile probabilities must be a 1-D list of numbers strictly in (0, 1)")
    if prior_is_standard_normal(model):
        d = as_model(model, pair=False).latent_prior().event_shape[-1]
        q = torch.distributions.Normal(0.0, 1.0).icdf(probs)
        return q.unsqueeze(-1).expand(-1, d).clone()
    draws = prior_draws(model, num_draws, seed).double()
    return torch.quantile(draws, probs.to(draws.device), dim=0)


def prior_centre(model: Any, num_draws: int = PRIOR_DRAWS, seed: int | None = 0) -> torch.Tensor:
    """The centre ``(D,)`` of the traversed latent's prior: the median of each dimension's marginal
    (:func:`prior_quantiles` at 0.5), exactly 0 for a standard-normal prior, else the empirical
    medians of ``num_draws`` draws under ``seed`` (learned priors, flows, z1's marginal prior of the
    hierarchical VAE). For a multi-modal prior (a mixture) this point may lie between the modes."""
    return prior_quantiles(model, torch.tensor([0.5]), num_draws, seed)[0]


#: the prior probabilities at which :func:`decoder_sensitivity` moves each dimension
SENSITIVITY_PROBS = (0.05, 0.1625, 0.275, 0.3875, 0.5, 0.6125, 0.725, 0.8375, 0.95)


@torch.no_grad()
def decoder_sensitivity(
    model: Any,
    *,
    label: int | None = None,
    num_draws: int = PRIOR_DRAWS,
    seed: int | None = 0,
) -> np.ndarray:
    r"""How much the decoded image changes as each dimension of the traversed latent moves across
    its prior, measured from the model alone (no data), ``(D,)``.

    With :math:`c` the prior's centre (:func:`prior_centre`), :math:`q_d(p)` the quantile of
    dimension d's prior marginal at :math:`p \in` :data:`SENSITIVITY_PROBS` (5% to 95%) and
    :math:`g` the decoder's mean (``decode_mean`` of ``model.decoder_input(z, label)``: for the
    label models at class ``label``), the root mean square over the probabilities and the data's
    values of the change from the centre's image:

    .. math:: S_d = \Big(\frac{1}{|P|\,|x|} \sum_{p \in P} \big\| g(c + (q_d(p) - c_d)\, e_d)
        - g(c) \big\|^2\Big)^{1/2}.

    A dimension the decoder ignores (a collapsed unit) has :math:`S_d = 0`; the traversal without
    data orders its rows by it, as the traversal of an image orders them by the KL over data.
    The model runs in eval mode; the prior's draws (other than N(0, I)) use ``seed``.
    """
    wrapped = as_model(model, caller="decoder_sensitivity", pair=False)
    probs = torch.tensor(SENSITIVITY_PROBS, dtype=torch.float64)
    with evaluating(wrapped), seeded(seed):
        values = prior_quantiles(wrapped, probs, num_draws, seed)  # (P, D)
        centre = prior_centre(wrapped, num_draws, seed)
        device, dtype = _device(wrapped, values), _float_dtype(wrapped)
        values = values.to(device=device, dtype=dtype)
        centre = centre.to(device=device, dtype=dtype)
        out = []
        for d in range(centre.shape[-1]):
            # the centre decoded in the same batch: a dimension the decoder ignores scores 0 exactly
            z = centre.expand(len(probs) + 1, -1).clone()
            z[1:, d] = values[:, d]
            images = model.decode_mean(wrapped.decoder_input(z, label))
            out.append((images[1:] - images[:1]).double().pow(2).mean().sqrt())
    return torch.stack(out).cpu().numpy()


def latent_kl_per_dim(
    model: Any,
    x: torch.Tensor,
    *,
    batch_size: int = 256,
    num_draws: int = PRIOR_DRAWS,
    scale_samples: int = 64,
    seed: int | None = 0,
) -> np.ndarray:
    r"""The KL to the prior of each dimension of the traversed latent, averaged over ``x``, ``(D,)``.

    Per dimension, between Gaussians: q's marginal :math:`N(\mu_d(x), \sigma_d(x)^2)` (the ``mean``
    and ``scale`` of :func:`encode`) and :math:`N(m_d, s_d^2)`, the prior's marginal (0 and 1 for a
    standard-normal prior, else the mean and standard deviation of ``num_draws`` prior draws):

    .. math:: \mathrm{KL}_d = \log\frac{s_d}{\sigma_d} + \frac{\sigma_d^2 + (\mu_d - m_d)^2}{2 s_d^2}
        - \frac12.

    For the diagonal (or low-rank) Gaussian guide against the standard-normal prior this is the
    exact per-dimension KL, the number :func:`pyro_vae.evaluate.latent_statistics` reports; for flows
    (sampled scales) and other priors (moment-matched marginals) it is a Gaussian approximation that
    still ranks the dimensions by how far q moves them from the prior, which is what the traversal
    figure needs it for (so a flow's scales come from only ``scale_samples`` draws here). Works for every model, z1 of the hierarchical VAE and z of the label models
    included, where ``latent_statistics`` reports other sites or none.
    """
    enc = encode(model, x, batch_size=batch_size, scale_samples=scale_samples, seed=seed)
    if "scale" not in enc:
        raise ConfigError(
            f"{type(model).__name__} has no encode(x) giving q(z|x), so the KL of each latent "
            "dimension is unknown; give the model an encode method"
        )
    mu = torch.as_tensor(enc["mean"], dtype=torch.float64)
    sigma = torch.as_tensor(enc["scale"], dtype=torch.float64).clamp_min(1e-12)
    if prior_is_standard_normal(model):
        m, s = torch.zeros(mu.shape[-1], dtype=torch.float64), torch.ones_like(mu[0])
    else:
        draws = prior_draws(model, num_draws, seed).double().cpu()
        m, s = draws.mean(0), draws.std(0).clamp_min(1e-12)
    kl = torch.log(s / sigma) + (sigma.pow(2) + (mu - m).pow(2)) / (2 * s.pow(2)) - 0.5
    return kl.mean(0).numpy()


# -- probes ---------------------------------------------------------------------------------------
def balanced_order(labels: Any, seed: int = 0) -> np.ndarray:
    """Every index of ``labels`` in an order whose every prefix is as class-balanced as the data
    allow: round-robin over the classes (in an order drawn by ``seed``), each class's examples in a
    random order drawn by ``seed``; a class that runs out leaves the rotation.

    The first ``n`` indices hold ``n // K`` examples of each of the K classes (one more for the first
    ``n % K`` classes of the rotation) while every class has that many, so subsets of growing ``n``
    are nested.
    """
    y = _as_labels(labels, len(labels), "labels")
    rng = np.random.default_rng(seed)
    classes, cls = np.unique(y, return_inverse=True)
    position = rng.permutation(classes.size)  # the rotation's order of the classes
    shuffled = rng.permutation(y.size)
    c = cls[shuffled]
    by_class = np.argsort(c, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(c, minlength=classes.size))[:-1]])
    rank = np.empty(y.size, dtype=np.int64)  # each shuffled example's rank within its class
    rank[by_class] = np.arange(y.size) - starts[c[by_class]]
    return shuffled[np.lexsort((position[c], rank))]


def balanced_subset(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` indices of ``labels``, class-balanced (see :func:`balanced_order`), chosen by ``seed``."""
    y = _as_labels(labels, len(labels), "labels")
    k = np.unique(y).size
    n = _positive_int(n, "the subset size")
    if not k <= n <= y.size:
        raise ConfigError(
            f"a class-balanced subset of {n} needs {k}..{y.size} examples (one per class, at most "
            f"all {y.size}); pick a size in that range"
        )
    return balanced_order(y, seed)[:n]


def _check_counts(label_counts: Sequence[int | None]) -> list[int | None]:
    if isinstance(label_counts, (str, bytes)) or not isinstance(label_counts, Sequence):
        raise ConfigError(
            f"label_counts must be a list of subset sizes (None: all), got {label_counts!r}"
        )
    return [None if n is None else _positive_int(n, "each probe subset size") for n in label_counts]


def _usable(counts: list[int | None], n_train: int, k: int) -> list[int | None]:
    """The sizes the probe fits: None (all), and every n with one example per class that the
    training set can supply (others are skipped)."""
    return [n for n in counts if n is None or k <= n <= n_train]


def _probe(
    features: Callable[[np.ndarray], np.ndarray],
    train_y: np.ndarray,
    order: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    counts: list[int | None],
    prefix: str,
    max_iter: int,
) -> dict[str, float]:
    """Fit and score one logistic regression per usable size; ``features(idx)`` gives the rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, float] = {}
    for n in counts:
        idx = np.arange(train_y.size) if n is None else order[:n]
        # the scaler is fitted on the subset only: the n labelled examples are all the probe sees
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        clf.fit(features(idx), train_y[idx])
        key = f"{prefix}_{'all' if n is None else n}"
        out[key] = float(np.mean(clf.predict(test_x) == test_y))
    return out


def _flat(x: Any, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] == 0:
        raise DataError(f"the {what} have no examples; pass at least one")
    if not np.isfinite(arr).all():
        raise DataError(f"the {what} contain NaN or infinite values; a probe needs finite ones")
    return arr.reshape(arr.shape[0], -1)


def _labels_and_classes(train_y: Any, n_train: int, test_y: Any, n_test: int) -> tuple:
    ytr = _as_labels(train_y, n_train, "the training labels")
    yte = _as_labels(test_y, n_test, "the test labels")
    k = np.unique(ytr).size
    if k < 2:
        raise DataError(
            "a probe needs at least two classes among the training labels, got "
            f"{k}; pass labelled data of several classes"
        )
    return ytr, yte, k


def logistic_probe(
    train_features: Any,
    train_y: Any,
    test_features: Any,
    test_y: Any,
    label_counts: Sequence[int | None] = PROBE_COUNTS,
    seed: int = 0,
    *,
    prefix: str = "probe_accuracy",
    max_iter: int = PROBE_MAX_ITER,
) -> dict[str, float]:
    """Test accuracy of logistic regression on given features, one fit per training subset size.

    For each ``n`` of ``label_counts``: scikit-learn's ``LogisticRegression(max_iter=max_iter)``
    (lbfgs, multinomial, L2 with C=1) on standardised features (``StandardScaler`` fitted on the
    subset) of a class-balanced subset of ``n`` training examples (:func:`balanced_subset`; subsets
    are nested and chosen by ``seed``), or of all of them for ``None``; scored on all test examples.
    Keys ``{prefix}_{n}`` and ``{prefix}_all``. A size larger than the training set, or smaller
    than its number of classes (not one example per class), is skipped: it has no key. Features
    are flattened per example. Deterministic given ``seed``.
    """
    xtr = _flat(train_features, "training features")
    xte = _flat(test_features, "test features")
    ytr, yte, k = _labels_and_classes(train_y, xtr.shape[0], test_y, xte.shape[0])
    counts = _usable(_check_counts(label_counts), ytr.size, k)
    order = balanced_order(ytr, seed)
    return _probe(lambda idx: xtr[idx], ytr, order, xte, yte, counts, prefix, max_iter)


def linear_probe(
    model: Any,
    train_x: torch.Tensor,
    train_y: Any,
    test_x: torch.Tensor,
    test_y: Any,
    label_counts: Sequence[int | None] = PROBE_COUNTS,
    seed: int = 0,
    *,
    batch_size: int = 256,
    max_iter: int = PROBE_MAX_ITER,
) -> dict[str, float]:
    """How linearly decodable the labels are from the latent means: :func:`logistic_probe` on the
    ``mean`` of :func:`encode` (the z part for the label models), keys ``probe_accuracy_100``,
    ``probe_accuracy_1000``, ``probe_accuracy_all`` for the default ``label_counts``.

    Only the training examples some subset uses are encoded (all of them when ``None`` is among
    ``label_counts``). Sizes larger than the training set or smaller than its number of classes are
    skipped (no key). Deterministic given ``seed`` (subsets, and any sampled latent mean).
    """
    if not isinstance(train_x, torch.Tensor) or not isinstance(test_x, torch.Tensor):
        raise DataError("the probe needs the training and test data as torch.Tensors")
    ytr, yte, k = _labels_and_classes(train_y, train_x.shape[0], test_y, test_x.shape[0])
    counts = _usable(_check_counts(label_counts), ytr.size, k)
    if not counts:
        return {}
    order = balanced_order(ytr, seed)
    if None in counts:
        needed = np.arange(ytr.size)
    else:
        needed = np.sort(order[: max(n for n in counts if n is not None)])
    position = np.full(ytr.size, -1, dtype=np.int64)
    position[needed] = np.arange(needed.size)

    def means(x: torch.Tensor) -> np.ndarray:
        enc = encode(model, x, batch_size=batch_size, scales=False, seed=seed)
        return enc["mean"].astype(np.float64)

    ztr = means(train_x[torch.as_tensor(needed, device=train_x.device)])
    zte = means(test_x)
    return _probe(
        lambda idx: ztr[position[idx]], ytr, order, zte, yte, counts, "probe_accuracy", max_iter
    )


def pixel_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any,
    test_y: Any,
    label_counts: Sequence[int | None] = PROBE_COUNTS,
    seed: int = 0,
    *,
    max_iter: int = PROBE_MAX_ITER,
) -> dict[str, float]:
    """The baseline of :func:`linear_probe`: the same logistic regression, subsets and seed on the
    raw pixels (flattened), keys ``pixel_probe_accuracy_100``, ..., ``pixel_probe_accuracy_all``."""
    return logistic_probe(
        train_x,
        train_y,
        test_x,
        test_y,
        label_counts,
        seed,
        prefix="pixel_probe_accuracy",
        max_iter=max_iter,
    )
