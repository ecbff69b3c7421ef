"""Image grids written as PNG files: the drawing primitive of :mod:`pyro_vae.plots` and of the
figures a model draws itself (:meth:`pyro_vae.Model.extra_figures`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

# matplotlib's Figure without pyplot: no global state, the Agg canvas, never a window, and a
# second's less import than pyplot (which the serving commands would pay for every figure)
from matplotlib.figure import Figure


def make_grid(
    images: torch.Tensor, nrow: int, padding: int = 1, pad_value: float = 1.0
) -> torch.Tensor:
    """``(3, H', W')``: ``images`` ``(N, C, H, W)`` tiled ``nrow`` to a row with ``padding``
    pixels of ``pad_value`` between and around them, one channel repeated to three; the layout of
    ``torchvision.utils.make_grid`` (whose import pulls in torchvision's model zoo and
    ``torch._dynamo``, seconds for a grid of pixels)."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    n, c, h, w = images.shape
    if n == 1:  # as torchvision: one image, unpadded
        return images[0].clone()
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    step_h, step_w = h + padding, w + padding
    grid = images.new_full((c, rows * step_h + padding, cols * step_w + padding), pad_value)
    for k in range(n):
        y, x = divmod(k, cols)
        top, left = y * step_h + padding, x * step_w + padding
        grid[:, top : top + h, left : left + w] = images[k]
    return grid


def _subplots(figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


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
    fig, ax = _subplots(
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


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
