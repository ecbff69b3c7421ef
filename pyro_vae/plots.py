"""Figures a person would rather look at than read, written as PNG files into a run's directory."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from .evaluate import batched  # noqa: E402
from .models import Model  # noqa: E402

FIGURES = "figures"


def _as_images(x: torch.Tensor) -> torch.Tensor | None:
    """``(N, C, H, W)`` images from data of any event shape, or ``None`` if they are not images."""
    x = x.detach().float().cpu()
    if x.ndim == 4:
        return x
    if x.ndim == 3:
        return x.unsqueeze(1)
    side = math.isqrt(x.shape[-1])
    if x.ndim == 2 and side * side == x.shape[-1]:
        return x.reshape(-1, 1, side, side)
    return None


def _save_grid(images: torch.Tensor, nrow: int, path: Path, title: str) -> Path | None:
    imgs = _as_images(images)
    if imgs is None:
        return None
    grid = make_grid(imgs.clamp(0, 1), nrow=nrow, padding=1, pad_value=1.0)
    cols, rows = min(nrow, imgs.shape[0]), math.ceil(imgs.shape[0] / nrow)
    # about half an inch per image, whatever its pixel size, so 8x8 digits and MNIST both read well
    fig, ax = plt.subplots(
        figsize=(
            max(4.0, 0.5 * cols),
            0.5 * rows * grid.shape[1] / grid.shape[2] * cols / rows + 0.5,
        )
    )
    ax.imshow(
        grid.permute(1, 2, 0).numpy(), interpolation="nearest"
    )  # make_grid always returns 3 channels
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    if not history:
        return None
    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["train_elbo"] for r in history], label="train ELBO")
    ax.plot(epochs, [r["test_elbo"] for r in history], label="test ELBO")
    for key, label in [
        ("test_iwae", "test IWAE bound"),
        ("test_log_likelihood", "test log p(x) (IS)"),
    ]:
        pts = [(r["epoch"], r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts), label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per datum (higher is better)")
    ax.set_title("Training curves")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def reconstructions(model: Any, x: torch.Tensor, path: Path, n: int = 16) -> Path | None:
    x = x[:n]
    recon = model.reconstruct(x)
    return _save_grid(
        torch.cat([x, recon]),
        nrow=x.shape[0],
        path=path,
        title="test images (top) and reconstructions (bottom)",
    )


@torch.no_grad()
def samples(model: Any, path: Path, n: int = 64) -> Path | None:
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
    fig, ax = plt.subplots(figsize=(6, 5))
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
    fig, ax = plt.subplots(figsize=(max(4.0, 0.18 * len(kl) + 1.5), 3.5))
    ax.bar(range(len(kl)), kl, color=["C0" if v > 0.01 else "C3" for v in kl])
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("KL(q || p), nats per datum")
    ax.set_title(
        f"Per-dimension KL (rate {stats['rate']:.1f} nats, active units "
        f"{stats['active_units']}/{len(kl)})"
    )
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def draw_all(
    model: Any,
    dataset: Any,
    history: Sequence[dict[str, Any]],
    run_dir: Path,
    projection: str = "pca",
) -> list[Path]:
    """Every figure this model supports, into ``run_dir/figures``; returns the files written."""
    out = Path(run_dir) / FIGURES
    was_training = model.training
    model.eval()
    try:
        written = [training_curves(history, out / "training_curves.png")]
        x = dataset.test
        written.append(reconstructions(model, x, out / "reconstructions.png"))
        written.append(samples(model, out / "samples.png"))
        written.append(interpolation(model, x, out / "interpolation.png"))
        written.append(
            latent_map(model, x, dataset.test_labels, out / "latent_map.png", projection)
        )
        written.append(kl_per_dimension(model, x, out / "kl_per_dimension.png"))
        if isinstance(model, Model):  # models add their own (e.g. class-conditional grids)
            written.extend(model.extra_figures(dataset, out))
    finally:
        model.train(was_training)
    return [p for p in written if p is not None]
