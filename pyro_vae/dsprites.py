"""dSprites, rendered here: 64x64 binary images of one white shape on black, every combination of
five factors once.

=========== ====== =================================================================
factor      values
=========== ====== =================================================================
shape       3      square, ellipse, heart (labels 0, 1, 2; DeepMind's values 1, 2, 3)
scale       6      ``linspace(0.5, 1, 6)``
orientation 40     ``linspace(0, 2 pi, 40)`` radians (both ends included, as DeepMind's)
pos_x       32     ``linspace(0, 1, 32)``
pos_y       32     ``linspace(0, 1, 32)``
=========== ====== =================================================================

737,280 images in DeepMind's order (Matthey et al. 2017, ``deepmind/dsprites-dataset``): the index
is the mixed-radix number of the factor labels, ``pos_y`` varying fastest, then ``pos_x``,
``orientation``, ``scale``, ``shape`` (DeepMind's first factor, colour, has one value and is left
out). Images are rendered on demand, deterministically (:func:`render`), so nothing is downloaded or
stored; :class:`DSpritesRows` streams them as a training set.

How the rendering differs from the original (which is a fixed file made with another rasteriser):

* a pixel is on when its centre lies inside the shape (no anti-aliasing, no supersampling), so
  edges differ from DeepMind's by up to a pixel;
* the shapes' outlines are ours: a square of side 14 px, an ellipse of axes 20 x 10 px, and the
  heart curve ``(u^2 + v^2 - 1)^3 = u^2 v^3`` 18 px wide, at scale 1; ``scale`` multiplies them;
* position 0..1 moves the shape's centre from pixel 12 to pixel 52 on each axis (y downwards), so
  every shape stays inside the frame;
* orientation turns the shape about its centre, counter-clockwise on screen; like the original,
  the square (90 degrees) and the ellipse (180 degrees) repeat themselves under rotation, so their
  orientation is not identifiable from the image over the whole range.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import DataError
from .factors import FactorDataset
from .streaming import RowSource

SIZE = 64
FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
FACTOR_VALUES = (
    np.arange(3, dtype=np.float64),
    np.linspace(0.5, 1.0, 6),
    np.linspace(0.0, 2 * math.pi, 40),
    np.linspace(0.0, 1.0, 32),
    np.linspace(0.0, 1.0, 32),
)
NUM_IMAGES = math.prod(FACTOR_SIZES)  # 737,280

# geometry in pixels at scale 1 (see the module docstring)
_SQUARE_HALF = 7.0
_ELLIPSE_AXES = (10.0, 5.0)
_HEART_HALF_WIDTH = 8.0  # the heart curve spans u in [-1.14, 1.14]: 18 px wide
_LOW, _HIGH = 12.0, 52.0  # the centre's pixel coordinate at position 0 and 1


def factors_of(index: np.ndarray | int) -> np.ndarray:
    """The factor labels ``(n, 5)`` of image indices (DeepMind's order, ``pos_y`` fastest)."""
    idx = np.asarray(index, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= NUM_IMAGES):
        raise DataError(f"dSprites image indices run from 0 to {NUM_IMAGES - 1}")
    out = np.empty((idx.size, len(FACTOR_SIZES)), dtype=np.int64)
    rest = idx.copy()
    for j in range(len(FACTOR_SIZES) - 1, -1, -1):
        out[:, j] = rest % FACTOR_SIZES[j]
        rest //= FACTOR_SIZES[j]
    return out


def index_of(factors: np.ndarray) -> np.ndarray:
    """The image index of each row of factor labels (inverse of :func:`factors_of`)."""
    f = np.asarray(factors, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    if ((f < 0) | (f >= np.asarray(FACTOR_SIZES))).any():
        raise DataError(f"dSprites factor labels must lie below the sizes {FACTOR_SIZES}")
    idx = np.zeros(f.shape[0], dtype=np.int64)
    for j, s in enumerate(FACTOR_SIZES):
        idx = idx * s + f[:, j]
    return idx


def render(factors: np.ndarray) -> np.ndarray:
    """Binary images ``(n, 64, 64)`` (uint8, 0 or 1) of rows of factor labels ``(n, 5)``."""
    f = np.asarray(factors, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    shape = f[:, 0]
    scale = FACTOR_VALUES[1][f[:, 1]][:, None, None]
    theta = FACTOR_VALUES[2][f[:, 2]][:, None, None]
    cx = (_LOW + (_HIGH - _LOW) * FACTOR_VALUES[3][f[:, 3]])[:, None, None]
    cy = (_LOW + (_HIGH - _LOW) * FACTOR_VALUES[4][f[:, 4]])[:, None, None]
    centres = np.arange(SIZE, dtype=np.float64) + 0.5
    px, py = centres[None, None, :], centres[None, :, None]
    dx, dy = px - cx, cy - py  # y up, so a positive angle turns counter-clockwise on screen
    cos, sin = np.cos(theta), np.sin(theta)
    # the pixel in the shape's own frame (the inverse rotation), in units of the scale
    u = (cos * dx + sin * dy) / scale
    v = (-sin * dx + cos * dy) / scale
    out = np.zeros((f.shape[0], SIZE, SIZE), dtype=bool)
    sq = shape == 0
    if sq.any():
        out[sq] = (np.abs(u[sq]) <= _SQUARE_HALF) & (np.abs(v[sq]) <= _SQUARE_HALF)
    el = shape == 1
    if el.any():
        a, b = _ELLIPSE_AXES
        out[el] = (u[el] / a) ** 2 + (v[el] / b) ** 2 <= 1.0
    he = shape == 2
    if he.any():
        hu = u[he] / _HEART_HALF_WIDTH
        hv = v[he] / _HEART_HALF_WIDTH + 0.1  # the curve spans v in [-1, 1.25]: centre it
        out[he] = (hu**2 + hv**2 - 1.0) ** 3 - hu**2 * hv**3 <= 0.0
    return out.astype(np.uint8)


class DSprites(FactorDataset):
    """The 737,280 rendered dSprites with their factor labels (:class:`FactorDataset`); images are
    rendered when asked for, so the object itself holds only the labels (30 MB)."""

    def __init__(self) -> None:
        super().__init__(
            factors_of(np.arange(NUM_IMAGES)),
            factor_names=FACTOR_NAMES,
            factor_sizes=FACTOR_SIZES,
            factor_values=FACTOR_VALUES,
        )

    def observations(self, index: np.ndarray | list[int]) -> torch.Tensor:
        """Images ``index`` as float32 ``(n, 1, 64, 64)``."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return torch.from_numpy(render(factors_of(idx))).float().unsqueeze(1)

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        return index_of(factors)  # every combination is present, at its mixed-radix index

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, size=n) for s in FACTOR_SIZES], axis=1)


class DSpritesRows(RowSource):
    """The rendered dSprites as a lazily read training set (rows rendered as they are read)."""

    chunk_rows = 4096

    def __init__(self) -> None:
        super().__init__(NUM_IMAGES, (1, SIZE, SIZE))

    def _read(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(render(factors_of(rows))).float().unsqueeze(1)

    def identity(self) -> bytes:
        return b"dsprites-rendered-v1"

    def describe(self) -> str:
        return "the rendered dSprites"

    def value_range(self, scan: bool = True) -> tuple[float, float] | None:
        return (0.0, 1.0)
