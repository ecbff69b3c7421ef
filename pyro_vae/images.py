"""Image grids written as PNG files: the drawing primitive of :mod:`pyro_vae.plots` and of the
figures a model draws itself (:meth:`pyro_vae.Model.extra_figures`)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures go to files, never to a window
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from .safety import atomic_save, finite_result  # noqa: E402


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
    finite_result(f"the figure {Path(path).name}", imgs)  # never a picture of NaN
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
    """Written to a temporary file that then replaces ``path``: a full disk or a crash keeps the
    figure that was there, and a link at ``path`` is replaced rather than written through."""
    try:
        fig.tight_layout()
        return atomic_save(Path(path), lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)
