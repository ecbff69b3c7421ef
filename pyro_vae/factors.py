"""Data with known generative factors: what the disentanglement metrics score a representation
against.

A :class:`FactorDataset` is ``N`` observations, each with ``K`` discrete factor labels
(``factors[n, k]`` in ``0..factor_sizes[k]-1``), the names of the factors and their values. It also
draws the factor-matched batches the beta-VAE and FactorVAE scores need
(:meth:`FactorDataset.sample_factors`, :meth:`FactorDataset.sample_observations`): observations with
given factor labels, found among the rows that carry them.

The rendered dSprites (:mod:`pyro_vae.dsprites`) is one, rendered on demand; any array with factor
labels is another (:func:`from_arrays`, and a ``.npz`` with a ``factors`` array).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .errors import DataError

#: the most values one factor may take (its values are listed, one per label)
MAX_FACTOR_SIZE = 2**24


class FactorDataset:
    """Observations with discrete factor labels.

    ``factors`` is an int array ``(N, K)``; ``factor_sizes[k]`` the number of values factor ``k``
    takes (its labels are ``0..size-1``); ``factor_values[k]`` what each label stands for (a float
    array; default the labels themselves). Subclasses that render observations on demand override
    :meth:`observations`; this class reads rows of an array ``x`` ``(N, *x_shape)``.
    """

    def __init__(
        self,
        factors: np.ndarray,
        *,
        x: np.ndarray | torch.Tensor | None = None,
        factor_names: Sequence[str] | None = None,
        factor_sizes: Sequence[int] | None = None,
        factor_values: Sequence[np.ndarray] | None = None,
    ) -> None:
        f = np.asarray(factors)
        if f.ndim == 1:
            f = f[:, None]
        if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] < 1:
            raise DataError(
                f"factors must be an integer array of shape (N, K), one row of K factor labels per "
                f"datum; got shape {f.shape}"
            )
        if f.dtype.kind == "f":
            if not np.isfinite(f).all() or (f != np.round(f)).any():
                raise DataError(
                    "factors must be whole-number labels 0..size-1 per factor; map continuous "
                    "values to bins first (e.g. np.unique(v, return_inverse=True))"
                )
        elif f.dtype.kind not in "iu":
            raise DataError(f"factors must be integer labels, got dtype {f.dtype}")
        f = f.astype(np.int64)
        if f.min() < 0:
            raise DataError("factors include a negative label; labels are 0..size-1 per factor")
        k = f.shape[1]
        sizes = (
            tuple(int(s) for s in factor_sizes)
            if factor_sizes is not None
            else tuple(int(m) + 1 for m in f.max(0))
        )
        if len(sizes) != k:
            raise DataError(f"{len(sizes)} factor sizes given for {k} factors")
        # a factor's values are listed one per label, and a combination of labels is one int64 key
        # (mixed radix): sizes past these bounds would allocate terabytes or overflow the key
        relabel = "relabel each factor to 0..(its distinct values - 1) with np.unique(v, return_inverse=True)"
        if any(s < 1 or s > MAX_FACTOR_SIZE for s in sizes):
            raise DataError(
                f"factor sizes must lie in 1..{MAX_FACTOR_SIZE}, got {list(sizes)}; {relabel}"
            )
        if math.prod(sizes) >= 2**62:
            raise DataError(
                f"the factors' sizes {list(sizes)} make more combinations than pyro-vae can index "
                f"(2**62); {relabel}"
            )
        over = np.nonzero(f.max(0) >= np.asarray(sizes))[0]
        if over.size:
            j = int(over[0])
            raise DataError(
                f"factor {j} has label {int(f[:, j].max())}, but its size is {sizes[j]}; labels "
                f"are 0..size-1"
            )
        names = (
            tuple(str(n) for n in factor_names)
            if factor_names is not None
            else tuple(f"factor_{j}" for j in range(k))
        )
        if len(names) != k:
            raise DataError(f"{len(names)} factor names given for {k} factors")
        values = (
            [np.asarray(v, dtype=np.float64) for v in factor_values]
            if factor_values is not None
            else [np.arange(s, dtype=np.float64) for s in sizes]
        )
        if [v.shape for v in values] != [(s,) for s in sizes]:
            raise DataError("factor_values must give one value per label of every factor")
        if x is not None and len(x) != f.shape[0]:
            raise DataError(f"{len(x)} observations for {f.shape[0]} rows of factors")
        self.factors = f
        self.factor_sizes = sizes
        self.factor_names = names
        self.factor_values = values
        self._x = x
        #: the rows' keys sorted, and the rows in that order (built at the first look-up)
        self._sorted_keys: np.ndarray | None = None
        self._order: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.factors.shape[0])

    @property
    def num_factors(self) -> int:
        return int(self.factors.shape[1])

    def observations(self, index: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Rows ``index`` as a float32 tensor ``(len(index), *x_shape)``."""
        if self._x is None:
            raise DataError("this factor data set has factor labels but no observations")
        idx = np.asarray(index, dtype=np.int64)
        x = self._x[torch.from_numpy(idx)] if isinstance(self._x, torch.Tensor) else self._x[idx]
        return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()

    # -- factor-matched sampling ------------------------------------------------------------
    def _key(self, f: np.ndarray) -> np.ndarray:
        """One integer per row of factor labels (mixed radix over the factor sizes)."""
        key = np.zeros(f.shape[0], dtype=np.int64)
        for j, s in enumerate(self.factor_sizes):
            key = key * s + f[:, j]
        return key

    def index_of(self, factors: np.ndarray) -> np.ndarray:
        """For each row of factor labels, the index of a datum carrying it (the first such one).

        :class:`DataError` if some combination is not in the data (a generic data set need not hold
        every combination)."""
        if self._sorted_keys is None or self._order is None:
            keys = self._key(self.factors)
            order = np.argsort(keys, kind="stable")
            self._sorted_keys, self._order = keys[order], order
        want = self._key(np.asarray(factors, dtype=np.int64).reshape(-1, self.num_factors))
        pos = np.searchsorted(self._sorted_keys, want)
        pos = np.minimum(pos, len(self._sorted_keys) - 1)
        missing = self._sorted_keys[pos] != want
        if missing.any():
            raise DataError(
                "no datum carries the factor combination "
                f"{np.asarray(factors).reshape(-1, self.num_factors)[missing][0].tolist()}; "
                "factor-matched sampling needs data that hold every combination it draws"
            )
        return self._order[pos]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows of factor labels: those of ``n`` data points drawn uniformly (with
        replacement), so only combinations present in the data are drawn."""
        return self.factors[rng.integers(0, len(self), size=n)]

    def sample_observations(self, factors: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Observations carrying the factor labels ``factors`` (one per row)."""
        return self.observations(self.index_of(factors))


def from_arrays(
    x: np.ndarray | torch.Tensor,
    factors: np.ndarray,
    factor_names: Sequence[str] | None = None,
    factor_sizes: Sequence[int] | None = None,
) -> FactorDataset:
    """Any observations ``x`` ``(N, ...)`` with factor labels ``factors`` ``(N, K)``."""
    return FactorDataset(factors, x=x, factor_names=factor_names, factor_sizes=factor_sizes)


class FactorSplit:
    """The factors of a training/test split: the whole :class:`FactorDataset` (for factor-matched
    sampling) and which of its rows the test set holds, in the test set's order."""

    def __init__(self, source: FactorDataset, test_index: np.ndarray) -> None:
        self.source = source
        self.test_index = np.asarray(test_index, dtype=np.int64)

    @property
    def test_factors(self) -> np.ndarray:
        return self.source.factors[self.test_index]

    @property
    def factor_names(self) -> tuple[str, ...]:
        return self.source.factor_names

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return self.source.factor_sizes
