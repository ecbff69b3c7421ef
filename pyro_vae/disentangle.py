"""Disentanglement metrics: plain functions of arrays, so they score any representation.

Rows are data points: ``latents`` is ``(N, D)`` (a representation, e.g. the means of q(z|x)),
``factors`` ``(N, K)`` integer factor labels. The defaults are disentanglement_lib's published
settings (Locatello et al. 2019, ``unsupervised_study_v1``), so the numbers compare with theirs:

=================== ==========================================================================
``mig``             mutual information gap (Chen et al. 2018) with disentanglement_lib's
                    estimator: each latent discretised into 20 equal-width bins, discrete MI
                    in nats, the gap between the two most informative latents over H(factor)
``mig_posterior``   MIG with Chen et al.'s own estimator: MI from samples of q(z|x) and the
                    mixture densities q(z_j) and q(z_j | v_k), no binning
``sap``             separated attribute predictability (Kumar et al. 2018): per latent and
                    factor the test accuracy of a linear SVM (C = 0.01, balanced classes) on
                    that latent alone; the mean over factors of the gap between the best two
``dci``             disentanglement, completeness, informativeness (Eastwood and Williams
                    2018): importances from scikit-learn's gradient boosted trees (defaults)
``factor_vae_score`` Kim and Mnih (2018): majority-vote classifier of the fixed factor from the
                    latent with the least normalised variance in batches of 64 sharing it;
                    10000 training votes, 5000 evaluation votes, dimensions with a standard
                    deviation under 0.05 pruned
``beta_vae_score``  Higgins et al. (2017): logistic regression of the fixed factor from the mean
                    absolute difference of the latents of 64 pairs sharing it; 10000 training
                    points, 5000 evaluation points
=================== ==========================================================================

``mig``, ``mig_posterior``, ``sap`` and ``dci`` take arrays; the last two scores draw
factor-matched batches, so they take an ``encode`` function (observations -> latents) and a
:class:`~pyro_vae.factors.FactorDataset` that draws them. :func:`disentanglement` scores a trained
model on data with factors with all of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import DataError
from .factors import FactorDataset
from .progress import track

if TYPE_CHECKING:
    from .data import Dataset

Encode = Callable[[torch.Tensor], np.ndarray]


def _numeric(value: Any, name: str, dtype: Any = float) -> np.ndarray:
    """``value`` (an array, a tensor or nested lists of numbers) as a numpy array."""
    try:
        out = np.asarray(value.detach().cpu() if torch.is_tensor(value) else value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{name} must be an array of numbers with one row per data point, got "
            f"{type(value).__name__} ({e})"
        ) from None
    if out.dtype.kind not in "biuf":
        raise DataError(f"{name} must be an array of numbers, got values of type {out.dtype}")
    return out


def _matrix(value: Any, name: str) -> np.ndarray:
    """``value`` as a finite 2-D float array."""
    out = _numeric(value, name)
    if out.ndim != 2 or 0 in out.shape:
        raise DataError(f"{name} must be a non-empty 2-D array, got shape {out.shape}")
    if not np.isfinite(out).all():
        raise DataError(f"{name} contains NaN or infinite values")
    return out


def _arrays(latents: Any, factors: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _numeric(latents, "latents")
    f = _numeric(factors, "factors", dtype=None)
    if z.ndim == 1:
        z = z[:, None]
    if f.ndim == 1:
        f = f[:, None]
    if z.ndim != 2 or f.ndim != 2:
        raise DataError(
            f"latents and factors are arrays with one row per data point, (N, D) and (N, K); got "
            f"shapes {z.shape} and {f.shape}"
        )
    if z.shape[0] != f.shape[0]:
        raise DataError(f"{z.shape[0]} rows of latents for {f.shape[0]} rows of factors")
    if z.shape[0] < 2:
        raise DataError("the metrics need at least 2 data points")
    if not np.isfinite(z).all():
        raise DataError("the latents contain NaN or infinite values")
    if f.dtype.kind == "f" and (f != np.round(f)).any():
        raise DataError("factors are discrete labels: pass integer labels (bin continuous ones)")
    return z, f.astype(np.int64)


def discretize(latents: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Each column binned into ``num_bins`` equal-width bins over its own range (labels 1..bins),
    disentanglement_lib's ``histogram_discretizer``."""
    z = _matrix(latents, "latents")
    out = np.zeros(z.shape, dtype=np.int64)
    for j in range(z.shape[1]):
        edges = np.histogram(z[:, j], num_bins)[1][:-1]
        out[:, j] = np.digitize(z[:, j], edges)
    return out


def discrete_mutual_information(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[i, k]``: the mutual information (nats) between column i of ``a`` and column k of ``b``,
    two arrays of discrete labels, from their empirical joint distribution."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [
            [mutual_info_score(b[:, k], a[:, i]) for k in range(b.shape[1])]
            for i in range(a.shape[1])
        ]
    )


def entropies(factors: np.ndarray) -> np.ndarray:
    """The empirical entropy (nats) of each column of discrete labels."""
    from sklearn.metrics import mutual_info_score

    return np.array(
        [mutual_info_score(factors[:, k], factors[:, k]) for k in range(factors.shape[1])]
    )


def mutual_information_matrix(latents: Any, factors: Any, num_bins: int = 20) -> np.ndarray:
    """``(D, K)``: the discretised mutual information between every latent and every factor."""
    z, f = _arrays(latents, factors)
    return discrete_mutual_information(discretize(z, num_bins), f)


def _gap(mi: np.ndarray, h: np.ndarray) -> float:
    """The mean over factors (with non-zero entropy) of the gap between the two largest MIs / H."""
    if mi.shape[0] < 2:
        raise DataError("MIG compares the two most informative latents: it needs at least 2")
    keep = h > 0
    if not keep.any():
        raise DataError("every factor is constant in these data; MIG needs a factor that varies")
    top = np.sort(mi, axis=0)[::-1]
    return float(np.mean((top[0, keep] - top[1, keep]) / h[keep]))


def mig(latents: Any, factors: Any, *, num_bins: int = 20) -> float:
    """The mutual information gap with disentanglement_lib's discretised estimator (20 bins).

    For each factor k: ``(I(z_a; v_k) - I(z_b; v_k)) / H(v_k)`` with ``z_a``, ``z_b`` the two latents
    most informative about it; the mean over factors. A factor constant in the data is left out.

    The plug-in MI of a latent with ``b`` occupied bins and a factor with ``v`` values reads about
    ``(b - 1)(v - 1) / (2N)`` nats high on N points (0.04 nats at disentanglement_lib's 10000 points
    for a 32-value position; 0.3 at 1000): the gap between two latents largely cancels it, the MI
    matrix does not.
    """
    z, f = _arrays(latents, factors)
    return _gap(discrete_mutual_information(discretize(z, num_bins), f), entropies(f))


def posterior_mutual_information(
    mean: Any, stddev: Any, factors: Any, *, seed: int = 0, chunk: int = 256
) -> np.ndarray:
    r"""``(D, K)``: Chen et al.'s estimate of :math:`I(z_j; v_k) = H(z_j) - H(z_j | v_k)` from the
    Gaussian posteriors ``N(mean_n, stddev_n^2)`` of the N data points, no binning.

    One code ``z_n ~ q(z|x_n)`` per point; ``H(z_j) = -mean_n log q(z_nj)`` with
    ``q(z_j) = 1/N sum_m q(z_j|x_m)``, and ``H(z_j|v_k) = sum_v p(v) H(z_j | v_k = v)`` with the
    mixture over the points that share ``v_k = v``.
    """
    mu, f = _arrays(mean, factors)
    sd, _ = _arrays(stddev, factors)
    if sd.shape != mu.shape or (sd <= 0).any():
        raise DataError("stddev must be positive and shaped like mean")
    rng = np.random.default_rng(seed)
    z = mu + sd * rng.standard_normal(mu.shape)
    n, d = mu.shape
    log_q = np.empty((n, n, d), dtype=np.float32) if n * n * d <= 2**25 else None  # <= 128 MB
    mu_t, sd_t, z_t = (torch.as_tensor(a, dtype=torch.float64) for a in (mu, sd, z))
    normal = torch.distributions.Normal(mu_t, sd_t)

    def block(rows: slice) -> torch.Tensor:  # [i, m, j] = log q(z_ij | x_m)
        return normal.log_prob(z_t[rows].unsqueeze(1))

    def entropy_given(mask_cols: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
        """-mean over ``rows`` of log (mean over mask_cols of q(z_ij|x_m)), per j."""
        total = np.zeros(d)
        for s in range(0, rows.size, chunk):
            r = rows[s : s + chunk]
            lp = (
                torch.as_tensor(log_q[r], dtype=torch.float64)
                if log_q is not None
                else normal.log_prob(z_t[torch.as_tensor(r)].unsqueeze(1))
            )
            if mask_cols is not None:
                lp = lp[:, torch.as_tensor(mask_cols)]
            lq = torch.logsumexp(lp, dim=1) - math.log(lp.shape[1])
            total -= lq.sum(0).numpy()
        return total / rows.size

    if log_q is not None:
        for s in range(0, n, chunk):
            log_q[s : s + chunk] = block(slice(s, s + chunk)).numpy()
    everyone = np.arange(n)
    h = entropy_given(None, everyone)
    out = np.zeros((d, f.shape[1]))
    for k in range(f.shape[1]):
        h_cond = np.zeros(d)
        for v in np.unique(f[:, k]):
            members = np.nonzero(f[:, k] == v)[0]
            h_cond += members.size / n * entropy_given(members, members)
        out[:, k] = h - h_cond
    return out


def mig_posterior(mean: Any, stddev: Any, factors: Any, *, seed: int = 0) -> float:
    """MIG with Chen et al.'s estimator (:func:`posterior_mutual_information`), normalised by the
    factors' empirical entropies."""
    _, f = _arrays(mean, factors)
    return _gap(posterior_mutual_information(mean, stddev, factors, seed=seed), entropies(f))


def _split(z: np.ndarray, f: np.ndarray, train_fraction: float) -> tuple[np.ndarray, ...]:
    """disentanglement_lib's ``split_train_test``: the first ``ceil(N * fraction)`` rows train."""
    if not 0 < train_fraction < 1:
        raise DataError(f"train_fraction must lie in (0, 1), got {train_fraction!r}")
    n = int(math.ceil(z.shape[0] * train_fraction))
    if n >= z.shape[0]:
        raise DataError("too few data points to hold out a test set")
    return z[:n], f[:n], z[n:], f[n:]


def sap_matrix(latents: Any, factors: Any, *, train_fraction: float = 2 / 3) -> np.ndarray:
    """``(D, K)``: test accuracy of a linear SVM predicting factor k from latent j alone."""
    from sklearn.svm import LinearSVC

    z, f = _arrays(latents, factors)
    ztr, ftr, zte, fte = _split(z, f, train_fraction)
    out = np.zeros((z.shape[1], f.shape[1]))
    for j in range(z.shape[1]):
        for k in range(f.shape[1]):
            if np.unique(ftr[:, k]).size < 2:
                out[j, k] = np.mean(fte[:, k] == ftr[0, k])
                continue
            clf = LinearSVC(C=0.01, class_weight="balanced")
            clf.fit(ztr[:, j : j + 1], ftr[:, k])
            out[j, k] = np.mean(clf.predict(zte[:, j : j + 1]) == fte[:, k])
    return out


def sap(latents: Any, factors: Any, *, train_fraction: float = 2 / 3) -> float:
    """The SAP score: the mean over factors of the gap between the two latents that predict it
    best (:func:`sap_matrix`). The first two thirds of the rows train, the rest test (10000 and
    5000 points in disentanglement_lib)."""
    m = sap_matrix(latents, factors, train_fraction=train_fraction)
    if m.shape[0] < 2:
        raise DataError("SAP compares the two most predictive latents: it needs at least 2")
    top = np.sort(m, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def _entropy_base(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy of the columns of ``p`` (normalised to sum to one), in base ``base``."""
    p = p / p.sum(0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(0) / math.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) of an importance matrix ``(D, K)`` (Eastwood and Williams
    2018): one minus the entropy of each latent's importances over the factors (base K), weighted
    by the latent's share of the importance; and one minus each factor's entropy over the latents
    (base D), weighted likewise. disentanglement_lib adds 1e-11 to every entry first; so do we."""
    r = np.abs(_matrix(importance, "importance")) + 1e-11
    d, k = r.shape
    per_code = 1.0 - _entropy_base(r.T, k) if k > 1 else np.ones(d)
    per_factor = 1.0 - _entropy_base(r, d) if d > 1 else np.ones(k)
    weights_code = r.sum(1) / r.sum()
    weights_factor = r.sum(0) / r.sum()
    return float(np.sum(per_code * weights_code)), float(np.sum(per_factor * weights_factor))


def dci(
    latents: Any, factors: Any, *, train_fraction: float = 2 / 3, seed: int = 0
) -> dict[str, float]:
    """DCI with gradient boosted trees (scikit-learn's ``GradientBoostingClassifier`` with its
    defaults, as disentanglement_lib): ``disentanglement``, ``completeness``, and
    ``informativeness_train``/``informativeness_test``, the trees' mean accuracy over factors."""
    from sklearn.ensemble import GradientBoostingClassifier

    z, f = _arrays(latents, factors)
    ztr, ftr, zte, fte = _split(z, f, train_fraction)
    importance = np.zeros((z.shape[1], f.shape[1]))
    train_acc, test_acc = [], []
    for k in track(range(f.shape[1]), total=f.shape[1], desc="DCI trees", unit="factors"):
        if np.unique(ftr[:, k]).size < 2:
            continue  # nothing to predict: no importance, the factor is left out
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(ztr, ftr[:, k])
        importance[:, k] = np.abs(model.feature_importances_)
        train_acc.append(np.mean(model.predict(ztr) == ftr[:, k]))
        test_acc.append(np.mean(model.predict(zte) == fte[:, k]))
    keep = importance.sum(0) > 0
    if not keep.any():
        raise DataError("every factor is constant in these data; DCI needs a factor that varies")
    d, c = dci_from_importance(importance[:, keep])
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
    }


def _encode_all(encode: Encode, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    out = [np.asarray(encode(x[i : i + batch]), dtype=float) for i in range(0, x.shape[0], batch)]
    return np.concatenate(out)


def _check_several_factors(data: FactorDataset, what: str) -> None:
    if data.num_factors < 2:
        raise DataError(
            f"{what} classifies which factor a batch holds fixed: it needs at least 2 factors, "
            f"these data have {data.num_factors}"
        )


def factor_vae_score(
    encode: Encode,
    data: FactorDataset,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """The FactorVAE score (Kim and Mnih 2018) with disentanglement_lib's settings.

    Latents are divided by their standard deviation over ``num_variance_estimate`` random data
    points; dimensions whose standard deviation is below ``prune_threshold`` are left out. Each
    vote fixes one factor (chosen uniformly) over ``batch_size`` data points and votes for the
    latent of least normalised variance; the classifier maps each latent to its majority factor.
    Returns ``train_accuracy``, ``eval_accuracy`` and ``num_active_dims``.
    """
    _check_several_factors(data, "the FactorVAE score")
    rng = np.random.default_rng(seed)
    x = data.sample_observations(data.sample_factors(num_variance_estimate, rng), rng)
    global_var = np.var(_encode_all(encode, x), axis=0, ddof=1)
    active = np.sqrt(global_var) >= prune_threshold
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(n: int) -> np.ndarray:
        out = np.zeros((data.num_factors, global_var.shape[0]), dtype=np.int64)
        for _ in track(range(n), total=n, desc="FactorVAE score", unit="votes"):
            k = int(rng.integers(data.num_factors))
            f = data.sample_factors(batch_size, rng)
            f[:, k] = f[0, k]
            z = np.asarray(encode(data.sample_observations(f, rng)), dtype=float)
            local = np.var(z, axis=0, ddof=1)
            ratio = np.where(active, local / np.where(active, global_var, 1.0), np.inf)
            out[k, int(np.argmin(ratio))] += 1
        return out

    train = votes(num_train)
    classifier = np.argmax(train, axis=0)  # latent -> factor
    cols = np.arange(train.shape[1])
    evaluation = votes(num_eval)
    return {
        "train_accuracy": float(train[classifier, cols].sum() / train.sum()),
        "eval_accuracy": float(evaluation[classifier, cols].sum() / evaluation.sum()),
        "num_active_dims": int(active.sum()),
    }


def beta_vae_score(
    encode: Encode,
    data: FactorDataset,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    """The beta-VAE score (Higgins et al. 2017) with disentanglement_lib's settings: each point
    fixes one factor (chosen uniformly) across ``batch_size`` pairs of data points and is the mean
    absolute difference of the pairs' latents; a logistic regression (scikit-learn's defaults)
    predicts the factor. Returns ``train_accuracy`` and ``eval_accuracy``."""
    from sklearn.linear_model import LogisticRegression

    _check_several_factors(data, "the beta-VAE score")
    rng = np.random.default_rng(seed)

    def points(n: int) -> tuple[np.ndarray, np.ndarray]:
        feats, labels = [], np.zeros(n, dtype=np.int64)
        for i in track(range(n), total=n, desc="beta-VAE score", unit="points"):
            k = int(rng.integers(data.num_factors))
            f1 = data.sample_factors(batch_size, rng)
            f2 = data.sample_factors(batch_size, rng)
            f2[:, k] = f1[:, k]
            z1 = np.asarray(encode(data.sample_observations(f1, rng)), dtype=float)
            z2 = np.asarray(encode(data.sample_observations(f2, rng)), dtype=float)
            feats.append(np.mean(np.abs(z1 - z2), axis=0))
            labels[i] = k
        return np.stack(feats), labels

    xtr, ytr = points(num_train)
    model = LogisticRegression(random_state=seed)
    model.fit(xtr, ytr)
    xev, yev = points(num_eval)
    return {
        "train_accuracy": float(np.mean(model.predict(xtr) == ytr)),
        "eval_accuracy": float(model.score(xev, yev)),
    }


# -- a trained model on data with factors --------------------------------------------------------


def _posterior(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and standard deviation of q(z|x), per dimension."""
    q = model.encode(x)
    while isinstance(q, torch.distributions.Independent):
        q = q.base_dist
    return q.mean, q.stddev


def encoder(model: Any, device: torch.device | str | None = None) -> Encode:
    """``x -> mean of q(z|x)`` as a NumPy array: the representation the metrics score (as
    disentanglement_lib scores the encoder's mean)."""
    dev = torch.device(device) if device is not None else next(model.parameters()).device

    def encode(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return model.latent_mean(x.to(dev)).reshape(x.shape[0], -1).cpu().numpy()

    return encode


def disentanglement(
    model: Any,
    data: Dataset,
    *,
    num_points: int | None = None,
    dci_points: int | None = None,
    num_votes: tuple[int, int] = (10000, 5000),
    metrics: Sequence[str] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Every metric of a trained model on a data set with factors (``data.factors``).

    ``metrics``: some of ``mig``, ``mig_posterior``, ``sap``, ``dci``, ``factor_vae``,
    ``beta_vae``; by default all that the data allow (the two voting scores classify which factor
    a batch holds fixed, so they need at least 2 factors; asked for on one, they are refused).

    ``mig``, ``mig_posterior``, ``sap`` and ``dci`` score the means of q(z|x) on the test set (its
    first ``num_points``, default all; DCI's boosted trees on the first ``dci_points`` of those, as
    they are slow); ``factor_vae`` and ``beta_vae`` draw their own factor-matched
    batches, ``num_votes`` = (training, evaluation) points of each (disentanglement_lib: 10000 and
    5000). Keys: ``mig``, ``mig_posterior``, ``sap``, ``dci_disentanglement``,
    ``dci_completeness``, ``dci_informativeness``, ``factor_vae_score``, ``beta_vae_score``.
    """
    if getattr(data, "factors", None) is None:
        raise DataError(
            f"the data set {data.name!r} has no factor labels; disentanglement needs data with "
            "known factors (--dataset dsprites, or a .npz with a 'factors' array)"
        )
    if metrics is None:
        voting = ("factor_vae", "beta_vae") if data.factors.source.num_factors >= 2 else ()
        metrics = ("mig", "mig_posterior", "sap", "dci", *voting)
    unknown = set(metrics) - {"mig", "mig_posterior", "sap", "dci", "factor_vae", "beta_vae"}
    if unknown:
        raise DataError(f"unknown metrics {sorted(unknown)}")
    split = data.factors
    x = data.test if num_points is None else data.test[:num_points]
    f = split.test_factors[: x.shape[0]]
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        parts = [_posterior(model, x[i : i + 512].to(dev)) for i in range(0, x.shape[0], 512)]
    mean = torch.cat([p[0] for p in parts]).reshape(x.shape[0], -1).cpu().numpy()
    sd = torch.cat([p[1] for p in parts]).reshape(x.shape[0], -1).cpu().numpy()
    out: dict[str, float] = {}
    if "mig" in metrics:
        out["mig"] = mig(mean, f)
    if "mig_posterior" in metrics:
        out["mig_posterior"] = mig_posterior(mean, sd, f, seed=seed)
    if "sap" in metrics:
        out["sap"] = sap(mean, f)
    if "dci" in metrics:
        m = mean.shape[0] if dci_points is None else min(dci_points, mean.shape[0])
        d = dci(mean[:m], f[:m], seed=seed)
        out["dci_disentanglement"] = d["disentanglement"]
        out["dci_completeness"] = d["completeness"]
        out["dci_informativeness"] = d["informativeness_test"]
    encode = encoder(model, dev)
    ntr, nev = num_votes
    if "factor_vae" in metrics:
        out["factor_vae_score"] = factor_vae_score(
            encode, split.source, num_train=ntr, num_eval=nev, num_variance_estimate=ntr, seed=seed
        )["eval_accuracy"]
    if "beta_vae" in metrics:
        out["beta_vae_score"] = beta_vae_score(
            encode, split.source, num_train=ntr, num_eval=nev, seed=seed
        )["eval_accuracy"]
    return out


# -- figures ---------------------------------------------------------------------------------------


def mi_figure(mi: np.ndarray, factor_names: Sequence[str], path: str | Path) -> Path:
    """The latent x factor mutual-information matrix as a heat map, saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d, k = mi.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * k, 0.9 + 0.35 * d))
    im = ax.imshow(mi, cmap="viridis", aspect="auto")
    ax.set_xticks(range(k), factor_names, rotation=30, ha="right")
    ax.set_yticks(range(d), [f"z{j}" for j in range(d)])
    ax.set_title("I(z_j; factor) [nats]")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def traversal_figure(
    model: Any,
    x: torch.Tensor,
    mi: np.ndarray,
    factor_names: Sequence[str],
    path: str | Path,
    *,
    steps: int = 9,
    span: float = 2.5,
    top: int | None = None,
) -> Path:
    """Latent traversals: from the mean code of ``x[0]``, each latent (sorted by how much it tells of
    any factor) swept over ``[-span, span]``, each row labelled by the factor it carries most
    information about (and that MI); ``top`` rows at most."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = next(model.parameters()).device
    with torch.no_grad():
        z0 = model.latent_mean(x[:1].to(dev)).reshape(1, -1)
    order = np.argsort(-mi.max(1))[: top or mi.shape[0]]
    values = torch.linspace(-span, span, steps, device=dev)
    fig, axes = plt.subplots(len(order), steps, figsize=(steps * 0.8, len(order) * 0.85 + 0.3))
    axes = np.atleast_2d(axes)
    for row, j in enumerate(order):
        z = z0.repeat(steps, 1)
        z[:, j] = values
        with torch.no_grad():
            imgs = model.decode_mean(z).reshape(steps, -1, *x.shape[-2:]).cpu()
        for c in range(steps):
            ax = axes[row, c]
            ax.imshow(imgs[c].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        k = int(np.argmax(mi[j]))
        axes[row, 0].set_ylabel(
            f"z{j}: {factor_names[k]}\n{mi[j, k]:.2f}",
            rotation=0,
            ha="right",
            va="center",
            fontsize=7,
        )
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
