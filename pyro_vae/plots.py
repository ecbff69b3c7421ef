"""Figures a person would rather look at than read, written as PNG files into a run's directory."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, PyroVAEError
from .evaluate import batched
from .images import _as_images, _save, _save_grid, _subplots, make_grid
from .kernel import evaluating, seeded
from .models import Model
from .models.base import as_model
from .safety import check_allocation, run_folder

FIGURES = "figures"


def training_curves(
    history: Sequence[dict[str, Any]], path: Path, dims: int | None = None
) -> Path | None:
    """The bounds per epoch in nats; with ``dims`` (data dimensions under a likelihood of the
    quantized data, :func:`pyro_vae.units.quantized_dims`) a second axis in bits per dimension."""
    if not history:
        return None
    fig, ax = _subplots(figsize=(6, 4))
    for key, label in [
        ("train_elbo", "train ELBO"),
        ("test_elbo", "test ELBO"),
        ("test_iwae", "test IWAE bound"),
        ("test_log_likelihood", "test log p(x) (IS)"),
    ]:
        # a record read back from metrics.jsonl may lack a number (null for a non-finite one)
        pts = [
            (r["epoch"], r[key])
            for r in history
            if isinstance(r.get(key), numbers.Real) and isinstance(r.get("epoch"), numbers.Real)
        ]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datum (higher is better)")
    if dims is not None:
        from .units import LN2

        scale = dims * LN2
        right = ax.secondary_yaxis("right", functions=(lambda v: -v / scale, lambda b: -b * scale))
        right.set_ylabel("bits per dimension (lower is better)")
    ax.set_title("Training curves")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def reconstructions(model: Any, x: torch.Tensor, path: Path, n: int = 16) -> Path | None:
    x = x[:n]
    check_grid(model, 2 * x.shape[0], "reconstructions")
    recon = model.reconstruct(x)
    return _save_grid(
        torch.cat([x, recon]),
        nrow=x.shape[0],
        path=path,
        title="test images (top) and reconstructions (bottom)",
    )


#: the most images one figure holds: beyond it a grid is unreadable, and its pixels alone take
#: gigabytes
MAX_GRID_IMAGES = 10_000


def check_grid(model: Any, n: int, what: str) -> None:
    """Refuse a figure of ``n`` images before drawing (or decoding) them: at most
    :data:`MAX_GRID_IMAGES`, and the decoded images must fit in memory."""
    if n > MAX_GRID_IMAGES:
        raise ConfigError(
            f"{what}: a figure of {n:,} images is more than pyro-vae draws ({MAX_GRID_IMAGES:,}); "
            "ask for fewer"
        )
    numel = math.prod(model.x_shape) if isinstance(model, Model) else 1
    # the decoded means, their grid and the figure's canvas: a few float32 copies of each image
    check_allocation(16 * n * numel, f"{what}: {n:,} images of {numel} values", "ask for fewer")


@torch.no_grad()
def samples(model: Any, path: Path, n: int = 64) -> Path | None:
    check_grid(model, n, "samples")
    return _save_grid(
        model.sample(n),
        nrow=int(math.sqrt(n)),
        path=path,
        title="samples from the prior (decoder means)",
    )


@torch.no_grad()
def interpolation(
    model: Any, x: torch.Tensor, path: Path, steps: int = 10, pairs: int = 4
) -> Path | None:
    check_grid(model, steps * min(pairs, x.shape[0] // 2), "interpolation")
    rows = []
    for i in range(min(pairs, x.shape[0] // 2)):
        z = model.latent_mean(x[2 * i : 2 * i + 2])
        t = torch.linspace(0, 1, steps, device=z.device, dtype=z.dtype).unsqueeze(-1)
        rows.append(model.decode_mean((1 - t) * z[0] + t * z[1]))
    if not rows:
        return None
    return _save_grid(
        torch.cat(rows), nrow=steps, path=path, title="latent interpolation between test images"
    )


@torch.no_grad()
def latent_map(
    model: Any,
    x: torch.Tensor,
    labels: torch.Tensor | None,
    path: Path,
    projection: str = "pca",
    max_points: int = 2000,
    seed: int = 0,
) -> Path | None:
    """Test-set latent means in 2-D: the means themselves for a 2-D latent space, else PCA or t-SNE."""
    x = x[:max_points]
    z = batched(model.latent_mean, x).float().cpu()
    if z.shape[-1] == 2:
        xy, how = z, "latent means"
    elif projection == "tsne":
        from sklearn.manifold import TSNE

        xy = torch.as_tensor(TSNE(2, random_state=seed, init="pca").fit_transform(z.numpy()))
        how = "t-SNE of latent means"
    else:
        centred = z - z.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        xy, how = centred @ v[:2].T, "PCA of latent means"
    fig, ax = _subplots(figsize=(6, 5))
    if labels is not None:
        lab = labels[: xy.shape[0]].cpu()
        sc = ax.scatter(
            xy[:, 0].numpy(), xy[:, 1].numpy(), c=lab.numpy(), cmap="tab10", s=6, alpha=0.8
        )
        fig.colorbar(sc, ax=ax, label="label")
    else:
        ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), s=6, alpha=0.8)
    ax.set_title(f"Test set: {how}")
    return _save(fig, path)


@torch.no_grad()
def kl_per_dimension(
    model: Any, x: torch.Tensor, path: Path, max_points: int = 2000
) -> Path | None:
    """Bar chart of the KL of each latent dimension over the test set: collapsed units sit at zero."""
    import warnings

    from .errors import PyroVAEError
    from .evaluate import latent_statistics

    try:
        stats = latent_statistics(model, x[:max_points], num_samples=1)
    except (PyroVAEError, NotImplementedError, ValueError, RuntimeError, TypeError) as e:
        warnings.warn(f"no per-dimension KL chart for this model: {e}", stacklevel=2)
        return None
    kl = stats["kl_per_dim"]
    if not kl:
        return None  # no latent site factorises per dimension
    fig, ax = _subplots(figsize=(max(4.0, 0.18 * len(kl) + 1.5), 3.5))
    ax.bar(range(len(kl)), kl, color=["C0" if v > 0.01 else "C3" for v in kl])
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL(q || p), nats per datum")
    ax.set_title(
        f"Per-dimension KL (rate {stats['rate']:.1f} nats, active units "
        f"{stats['active_units']}/{len(kl)})"
    )
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def kl_order(kl: Sequence[float], max_dims: int | None = None) -> list[int]:
    """Latent dimensions by decreasing KL (ties: the lower index first), the first ``max_dims``."""
    order = sorted(range(len(kl)), key=lambda d: (-float(kl[d]), d))
    return order if max_dims is None else order[:max_dims]


def traversal_probs(steps: int) -> torch.Tensor:
    """The prior probabilities a traversal's columns sit at: ``linspace(0.05, 0.95, steps)``, the
    median alone for one step."""
    if steps == 1:
        return torch.tensor([0.5], dtype=torch.float64)
    return torch.linspace(0.05, 0.95, steps, dtype=torch.float64)


def _traversal_dims(dims: Sequence[int] | None, kl: Any, max_dims: int) -> list[int]:
    size = len(kl)
    if dims is None:
        return kl_order(kl, max_dims)
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not dims:
        raise ConfigError(f"dims must be a non-empty list of latent dimensions, got {dims!r}")
    picked = []
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < size:
            raise ConfigError(f"dims must hold latent dimensions in 0..{size - 1}, got {d!r}")
        if d in picked:
            raise ConfigError(f"dims lists dimension {d} twice; list each dimension once")
        picked.append(d)
    return picked


def _check_traversal_options(x: Any, image: Any, kl_points: Any, label: Any) -> tuple[int, int]:
    """``image`` and ``kl_points`` with their defaults where ``x`` is given; refuse the options the
    traversal would not use (those of the other kind of traversal)."""
    if x is None:
        for name, value in (("image", image), ("kl_points", kl_points)):
            if value is not None:
                raise ConfigError(
                    f"{name}={value!r} reads the data x, and none were given: pass x to traverse "
                    f"one of its images, or leave {name} out to traverse from the prior's centre"
                )
        return 0, 0
    if not isinstance(x, torch.Tensor):
        raise ConfigError(
            f"x must be a torch.Tensor of data (or None: a traversal from the prior), got "
            f"{type(x).__name__}"
        )
    if label is not None:
        raise ConfigError(
            f"label={label!r} sets the class of a traversal from the prior (x=None); with x the "
            "model infers each image's label: leave label out, or leave x out"
        )
    return (0 if image is None else image), (500 if kl_points is None else kl_points)


@torch.no_grad()
def traversal_latents(
    model: Any,
    x: torch.Tensor | None = None,
    *,
    image: int | None = None,
    steps: int = 9,
    dims: Sequence[int] | None = None,
    max_dims: int = 10,
    kl_points: int | None = None,
    label: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, list[int], np.ndarray]:
    """The latents of a traversal ``(rows, steps, L)`` (``L``: the width ``decode_mean`` takes), the
    dimension of each row, and the per-dimension score the rows are ordered by.

    Each row is a base point with dimension ``rows[r]`` replaced by the prior's quantiles at
    :func:`traversal_probs` (:func:`pyro_vae.represent.prior_quantiles`: exact for a
    standard-normal prior, else empirical from prior draws). The rows are ``dims`` in their order,
    else the ``max_dims`` dimensions of largest score, largest first. There are two kinds:

    - **of an image**, with data ``x``: the base is ``model.latent_mean(x[image])`` (``image``
      default 0) and the score the KL of each dimension to the prior
      (:func:`pyro_vae.represent.latent_kl_per_dim` over ``x[:kl_points]``, default 500). Only the z
      part of the label models' ``[z, onehot(y)]`` is traversed; y stays the predicted label.
    - **from the prior**, ``x=None`` (needs no data): the base is the prior's centre
      (:func:`pyro_vae.represent.prior_centre`: 0 for N(0, I), else each dimension's median), put
      into the decoder's input by ``model.decoder_input`` (label models: class ``label``, default
      0; a model without labels refuses one), and the score is
      :func:`pyro_vae.represent.decoder_sensitivity`, how much the decoded image moves with each
      dimension, measured from the model alone.

    The hierarchical VAE's traversed latent is z1. Random draws (prior quantiles, a flow guide's
    mean) use ``seed``.
    """
    from .represent import (
        _device,
        _float_dtype,
        _positive_int,
        decoder_sensitivity,
        latent_kl_per_dim,
        prior_centre,
        prior_quantiles,
    )

    image, kl_points = _check_traversal_options(x, image, kl_points, label)
    steps = _positive_int(steps, "steps")
    max_dims = _positive_int(max_dims, "max_dims")
    if x is None:
        wrapped = as_model(model, caller="traversal", pair=False)
        if label is None and wrapped.num_classes is not None:
            label = 0
        # decoder_input refuses a label the model cannot take, or one outside its classes
        score = decoder_sensitivity(model, label=label, seed=seed)
        rows = _traversal_dims(dims, score, max_dims)
        with evaluating(wrapped), seeded(seed):
            centre = prior_centre(wrapped, seed=seed)
            values = prior_quantiles(wrapped, traversal_probs(steps), seed=seed)  # (steps, D)
            device = _device(wrapped, values)
            centre = centre.to(device=device, dtype=_float_dtype(wrapped))
            base = wrapped.decoder_input(centre.unsqueeze(0), label)  # (1, L)
    else:
        kl_points = _positive_int(kl_points, "kl_points")
        n = x.shape[0]
        if isinstance(image, bool) or not isinstance(image, numbers.Integral) or not 0 <= image < n:
            raise ConfigError(
                f"image must be the index of a test image in 0..{n - 1}, got {image!r}"
            )
        image = int(image)
        score = latent_kl_per_dim(model, x[:kl_points], seed=seed)
        rows = _traversal_dims(dims, score, max_dims)
        device = _device(model, x)
        with evaluating(model), seeded(seed):
            base = model.latent_mean(x[image : image + 1].to(device))  # (1, L): [z, onehot(y)] or z
            values = prior_quantiles(model, traversal_probs(steps), seed=seed)  # (steps, D)
    values = values.to(device=base.device, dtype=base.dtype)
    v = base.expand(len(rows), steps, base.shape[-1]).clone()
    for r, d in enumerate(rows):
        v[r, :, d] = values[:, d]
    return v, rows, score


@torch.no_grad()
def traversal_images(
    model: Any, x: torch.Tensor | None = None, **options: Any
) -> tuple[torch.Tensor, list[int], np.ndarray]:
    """:func:`traversal_latents` (same options; ``x=None``: from the prior) decoded with
    ``decode_mean``: the images ``(rows, steps, *x_shape)``, the dimension of each row and the
    per-dimension score (KL with ``x``, decoder sensitivity without)."""
    v, rows, score = traversal_latents(model, x, **options)
    with evaluating(model):
        images = model.decode_mean(v.reshape(-1, v.shape[-1]))
    return images.reshape(*v.shape[:2], *images.shape[1:]), rows, score


@torch.no_grad()
def traversal(
    model: Any,
    x: torch.Tensor | None = None,
    path: str | Path | None = None,
    *,
    image: int | None = None,
    steps: int = 9,
    dims: Sequence[int] | None = None,
    max_dims: int = 10,
    kl_points: int | None = None,
    label: int | None = None,
    seed: int = 0,
) -> Path | None:
    """Latent traversals drawn into ``path`` (a PNG): one row per latent dimension, one column per
    prior quantile (5% to 95%) that dimension is set to (see :func:`traversal_latents`).

    With data ``x``, of test image ``x[image]``, rows by KL to the prior; with ``x=None`` (e.g.
    ``traversal(model, path="t.png")``: no data needed), from the prior's centre (label models: at
    class ``label``, default 0), rows by decoder sensitivity. Each row is labelled with its score.
    ``None`` for data that are not image-shaped."""
    if path is None:
        raise ConfigError("traversal needs path=, the PNG file to draw into")
    if x is not None and isinstance(x, torch.Tensor) and _as_images(x[:1]) is None:
        return None
    if isinstance(steps, int) and isinstance(max_dims, int):
        check_grid(model, steps * (max_dims if dims is None else len(dims)), "traversal")
    images, rows, score = traversal_images(
        model,
        x,
        image=image,
        steps=steps,
        dims=dims,
        max_dims=max_dims,
        kl_points=kl_points,
        label=label,
        seed=seed,
    )
    imgs = _as_images(images.reshape(-1, *images.shape[2:]))
    if imgs is None:
        return None
    grid = make_grid(imgs.clamp(0, 1), nrow=steps, padding=1, pad_value=1.0)
    h, w = imgs.shape[-2:]
    width = max(4.0, 0.5 * steps) + 1.5  # room for the row labels
    fig, ax = _subplots(figsize=(width, (width - 1.5) * grid.shape[1] / grid.shape[2] + 0.8))
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    # the KL of an image's traversal, or the RMS change of the decoded image of one from the prior
    label_of = (lambda s: f"KL {s:.2f}") if x is not None else (lambda s: f"change {s:.3g}")
    ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(len(rows))])
    ax.set_yticklabels([f"dim {d}  {label_of(score[d])}" for d in rows], fontsize=8)
    ax.set_xticks([1 + c * (w + 1) + (w - 1) / 2 for c in range(steps)])
    ax.set_xticklabels([f"{p:.0%}" for p in traversal_probs(steps).tolist()], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xlabel("prior quantile of the traversed dimension")
    if x is not None:
        base, order = f"test image {0 if image is None else image}", "KL"
    else:
        classes = as_model(model, pair=False).num_classes
        base = "the prior's centre" + ("" if classes is None else f", class {label or 0}")
        order = "decoder sensitivity"
    order = "as listed" if dims is not None else f"dimensions by {order}"
    ax.set_title(f"latent traversals of {base}\n(rows: {order})", fontsize=10)
    return _save(fig, path)


def _quantized_dims(model: Any, x: torch.Tensor) -> int | None:
    from .units import NotQuantized, quantized_dims

    try:
        return quantized_dims(model.model, x)
    except NotQuantized:
        return None


def draw_all(
    model: Any,
    dataset: Any,
    history: Sequence[dict[str, Any]],
    run_dir: Path,
    projection: str = "pca",
) -> list[Path]:
    """Every figure this model supports, into ``run_dir/figures``; returns the files written."""
    # a received run directory may hold links: the folder must be its own, and each figure
    # replaces what is at its name (a link included) rather than writing through it
    out = run_folder(run_dir, FIGURES)
    was_training = model.training
    model.eval()
    try:
        x = dataset.test
        written = [training_curves(history, out / "training_curves.png", _quantized_dims(model, x))]
        written.append(reconstructions(model, x, out / "reconstructions.png"))
        written.append(samples(model, out / "samples.png"))
        written.append(interpolation(model, x, out / "interpolation.png"))
        written.append(
            latent_map(model, x, dataset.test_labels, out / "latent_map.png", projection)
        )
        written.append(kl_per_dimension(model, x, out / "kl_per_dimension.png"))
        try:
            written.append(traversal(model, x, out / "traversal.png"))
        except PyroVAEError as e:  # e.g. a custom model without encode(x) or prior()
            warnings.warn(f"no latent traversal figure for this model: {e}", stacklevel=2)
        # models add their own (e.g. class-conditional grids); a plain pair has none
        written.extend(as_model(model).extra_figures(dataset, out))
    finally:
        model.train(was_training)
    return [p for p in written if p is not None]
