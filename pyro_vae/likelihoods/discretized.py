"""Discretized logistic likelihoods for quantized pixels (Salimans et al. 2017, PixelCNN++).

Neither torch nor Pyro has a distribution over quantized pixels (``pyro.distributions.Logistic`` is
the continuous density); TensorFlow Probability's ``QuantizedDistribution`` is not for torch, and
zuko has none. Written here as Pyro ``TorchDistribution``\\ s.

Data are ``2**bits`` levels stored as floats ``k / (2**bits - 1)`` in [0, 1]. Level ``k`` takes the
mass of a logistic in ``[x - h, x + h]`` with ``h = 1 / (2 (2**bits - 1))``; the first and last levels
take the tails, so the levels' probabilities sum to one exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn.functional import logsigmoid, softplus

from ..errors import ConfigError, DataError
from .base import LIKELIHOODS, Likelihood

#: log-scales are clamped here, on the [0, 1] scale of the data (PixelCNN++'s -7 on [-1, 1] is about
#: -7.7): a level's mass then saturates instead of the gradient blowing up
LOG_SCALE_MIN = -9.0
LOG_SCALE_MAX = 7.0


def _levels(bits: int) -> int:
    return 2**bits


def log_bin_mass(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, bits: int
) -> torch.Tensor:
    """log P(level of ``x``) under Logistic(loc, exp(log_scale)) discretized to ``2**bits`` levels.

    The interior mass ``sigmoid(a) - sigmoid(b)`` (``a``, ``b`` the standardised bin edges) is
    computed as ``logsigmoid(a) - softplus(b) + log(1 - exp(-(a - b)))``: exact, and finite for any
    mass however small (no float32 cancellation, so PixelCNN++'s density approximation for tiny bins
    is not needed). The edges: ``log sigmoid(a)`` below the first level, ``-softplus(b)`` above the last.
    """
    top = _levels(bits) - 1
    half = 0.5 / top
    log_scale = log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    inv = torch.exp(-log_scale)
    centred = x - loc
    a = inv * (centred + half)
    b = inv * (centred - half)
    width = inv * (2 * half)  # a - b, positive
    interior = logsigmoid(a) - softplus(b) + torch.log(-torch.expm1(-width))
    k = torch.round(x * top)
    return torch.where(k <= 0, logsigmoid(a), torch.where(k >= top, -softplus(b), interior))


def _sample_logistic(loc: torch.Tensor, log_scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse-CDF draws, quantized; u = 0 gives -inf, which the first level takes (no NaN)."""
    u = torch.rand_like(loc)
    scale = torch.exp(log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    return quantize(loc + scale * (torch.log(u) - torch.log1p(-u)), bits)


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The nearest of the ``2**bits`` levels ``k / (2**bits - 1)`` in [0, 1]."""
    top = _levels(bits) - 1
    return torch.round(x.clamp(0, 1) * top) / top


class _Quantized(constraints.Constraint):
    is_discrete = True
    event_dim = 0

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def check(self, value: torch.Tensor) -> torch.Tensor:
        top = _levels(self.bits) - 1
        k = value * top
        return (value >= 0) & (value <= 1) & ((k - torch.round(k)).abs() < 1e-3)


class DiscretizedLogistic(TorchDistribution):
    """Independent discretized logistics, one per element of the event.

    ``loc`` and ``log_scale`` have shape ``batch_shape + event_shape`` (``event_shape`` the last
    ``event_dim`` dimensions); values are levels ``k / (2**bits - 1)``.
    """

    arg_constraints = {"loc": constraints.real, "log_scale": constraints.real}
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        bits: int = 8,
        event_dim: int = 0,
        validate_args: bool | None = None,
    ) -> None:
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.bits = bits
        shape = self.loc.shape
        cut = len(shape) - event_dim
        super().__init__(shape[:cut], shape[cut:], validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.independent(_Quantized(self.bits), len(self.event_shape))

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001, ANN201
        shape = torch.Size(batch_shape) + self.event_shape
        return DiscretizedLogistic(
            self.loc.expand(shape),
            self.log_scale.expand(shape),
            self.bits,
            len(self.event_shape),
            validate_args=False,
        )

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        lp = log_bin_mass(value, self.loc, self.log_scale, self.bits)
        return lp.sum(tuple(range(-len(self.event_shape), 0))) if self.event_shape else lp

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            return _sample_logistic(self.loc.expand(shape), self.log_scale.expand(shape), self.bits)

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean of the discretized variable: sum over levels of level x mass."""
        return _level_mean(self.loc, self.log_scale, self.bits)

    @property
    def mode(self) -> torch.Tensor:
        """The most probable level: the one nearest the location (a logistic is unimodal and
        symmetric), unless a tail heaped on the first or last level weighs more."""
        candidates = torch.stack(
            [quantize(self.loc, self.bits), torch.zeros_like(self.loc), torch.ones_like(self.loc)]
        )
        mass = log_bin_mass(candidates, self.loc, self.log_scale, self.bits)
        return candidates.gather(0, mass.argmax(0, keepdim=True)).squeeze(0)


def _level_mean(loc: torch.Tensor, log_scale: torch.Tensor, bits: int) -> torch.Tensor:
    """The mean of the discretized logistic, ``sum_k level_k P(level_k)``, as the sum of its
    exceedances ``(1/top) sum_{k >= 1} P(X >= level_k)`` (one sigmoid per level; levels in chunks)."""
    top = _levels(bits) - 1
    inv = torch.exp(-log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    total = torch.zeros_like(loc)
    edges = (torch.arange(1, top + 1, dtype=loc.dtype, device=loc.device) - 0.5) / top
    for chunk in edges.split(64):
        lower = chunk.reshape(-1, *([1] * loc.dim()))
        total = total + torch.sigmoid(inv * (loc - lower)).sum(0)
    return total / top


class DiscretizedLogisticMixture(TorchDistribution):
    """A mixture of ``K`` discretized logistics per pixel, channels coupled (PixelCNN++ eq. 3).

    Shapes, for an event ``(C, *pixels)``: ``logits`` ``batch + (K, *pixels)`` (the mixture weights,
    shared by a pixel's channels), ``locs`` and ``log_scales`` ``batch + (K, C, *pixels)``, ``coeffs``
    ``batch + (K, C (C - 1) / 2, *pixels)`` (in (-1, 1)). Given component ``k``, channel ``c`` is a
    discretized logistic with location ``locs[k, c] + sum_{j < c} coeffs[k, (c, j)] x_j``: each channel's
    mean depends linearly on the values of the channels before it (R -> G -> B), so a pixel's
    channels are correlated while the pixel's likelihood is still exact.
    """

    arg_constraints = {
        "logits": constraints.real,
        "locs": constraints.real,
        "log_scales": constraints.real,
        "coeffs": constraints.interval(-1.0, 1.0),
    }
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        log_scales: torch.Tensor,
        coeffs: torch.Tensor | None = None,
        bits: int = 8,
        pixel_dims: int = 2,
        validate_args: bool | None = None,
    ) -> None:
        self.logits, self.locs, self.log_scales, self.bits = logits, locs, log_scales, bits
        channels = locs.shape[-pixel_dims - 1]
        pairs = channels * (channels - 1) // 2
        if coeffs is None:
            coeffs = locs.new_zeros(
                *locs.shape[: -pixel_dims - 1], pairs, *locs.shape[-pixel_dims:]
            )
        if coeffs.shape[-pixel_dims - 1] != pairs:
            raise ValueError(
                f"{channels} channels need {pairs} coupling coefficients per component"
            )
        self.coeffs = coeffs
        self.pixel_dims = pixel_dims
        self.channels = channels
        batch = locs.shape[: -pixel_dims - 2]
        event = torch.Size((channels, *locs.shape[-pixel_dims:]))
        super().__init__(batch, event, validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.independent(_Quantized(self.bits), len(self.event_shape))

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001, ANN201
        batch = torch.Size(batch_shape)

        def grow(t: torch.Tensor, event: int) -> torch.Tensor:
            return t.expand(batch + t.shape[t.dim() - event :])

        p = self.pixel_dims
        return DiscretizedLogisticMixture(
            grow(self.logits, p + 1),
            grow(self.locs, p + 2),
            grow(self.log_scales, p + 2),
            grow(self.coeffs, p + 2),
            self.bits,
            p,
            validate_args=False,
        )

    def _coupled_locs(self, value: torch.Tensor) -> torch.Tensor:
        """Component locations with each channel's mean shifted by the channels before it."""
        if self.channels == 1:
            return self.locs
        x = value.unsqueeze(-self.pixel_dims - 2)  # a component axis
        cdim = -self.pixel_dims - 1
        out = []
        pair = 0
        for c in range(self.channels):
            loc = self.locs.select(cdim, c)
            for j in range(c):
                loc = loc + self.coeffs.select(cdim, pair) * x.select(cdim, j)
                pair += 1
            out.append(loc)
        return torch.stack(torch.broadcast_tensors(*out), cdim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        x = value.unsqueeze(-self.pixel_dims - 2)
        per_channel = log_bin_mass(x, self._coupled_locs(value), self.log_scales, self.bits)
        per_component = per_channel.sum(-self.pixel_dims - 1) + torch.log_softmax(
            self.logits, -self.pixel_dims - 1
        )
        per_pixel = torch.logsumexp(per_component, -self.pixel_dims - 1)
        return per_pixel.sum(tuple(range(-self.pixel_dims, 0)))

    def _component(self, sample_shape: torch.Size) -> torch.Tensor:
        """One-hot draws of the component of each pixel, shape ``sample + batch + (K, 1, *pixels)``."""
        kdim = -self.pixel_dims - 1
        logits = self.logits.expand(sample_shape + self.logits.shape)
        gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp(1e-10, 1 - 1e-7)))
        k = (logits + gumbel).argmax(kdim, keepdim=True)
        return torch.zeros_like(logits).scatter_(kdim, k, 1.0).unsqueeze(kdim)

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        sample_shape = torch.Size(sample_shape)
        kdim, cdim = -self.pixel_dims - 2, -self.pixel_dims - 1
        with torch.no_grad():
            onehot = self._component(sample_shape)
            locs = (self.locs.expand(sample_shape + self.locs.shape) * onehot).sum(kdim)
            log_scales = (
                self.log_scales.expand(sample_shape + self.log_scales.shape) * onehot
            ).sum(kdim)
            coeffs = (self.coeffs.expand(sample_shape + self.coeffs.shape) * onehot).sum(kdim)
            return self._channel_by_channel(
                locs,
                coeffs,
                lambda c, loc: _sample_logistic(loc, log_scales.select(cdim, c), self.bits),
            )

    @property
    def mode(self) -> torch.Tensor:
        """A point summary: the coupled location of each pixel's most probable component, quantized
        (the exact mode of a mixture has no closed form)."""
        kdim = -self.pixel_dims - 2
        k = self.logits.argmax(-self.pixel_dims - 1, keepdim=True)
        # (K, *pixels) -> (K, 1, *pixels): one weight per component, shared by the channel axis
        onehot = (
            torch.zeros_like(self.logits)
            .scatter_(-self.pixel_dims - 1, k, 1.0)
            .unsqueeze(-self.pixel_dims - 1)
        )
        locs = (self.locs * onehot).sum(kdim)
        coeffs = (self.coeffs * onehot).sum(kdim)
        return self._channel_by_channel(locs, coeffs, lambda c, loc: quantize(loc, self.bits))

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean for one channel; with coupled channels, the mean of each channel given the
        mean of the channels before it (a point summary: the exact mean is not in closed form)."""
        kdim, cdim = -self.pixel_dims - 2, -self.pixel_dims - 1
        weights = torch.softmax(self.logits, -self.pixel_dims - 1)

        def channel_mean(c: int, loc: torch.Tensor) -> torch.Tensor:
            per_k = _level_mean(loc, self.log_scales.select(cdim, c), self.bits)
            return (per_k * weights).sum(kdim + 1)

        # a channel's mean shifts every component of the channels after it
        return self._channel_by_channel(
            self.locs, self.coeffs, channel_mean, lambda x: x.unsqueeze(kdim + 1)
        )

    def _channel_by_channel(
        self,
        locs: torch.Tensor,
        coeffs: torch.Tensor,
        channel: Callable[[int, torch.Tensor], torch.Tensor],
        as_input: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    ) -> torch.Tensor:
        """Channels in order (R -> G -> B): channel ``c`` is ``channel(c, loc)`` at its location
        ``locs[c] + sum_{j < c} coeffs[(c, j)] * as_input(channel j)``; stacked on the channel axis."""
        cdim = -self.pixel_dims - 1
        channels: list[torch.Tensor] = []
        pair = 0
        for c in range(self.channels):
            loc = locs.select(cdim, c)
            for j in range(c):
                loc = loc + coeffs.select(cdim, pair) * as_input(channels[j])
                pair += 1
            channels.append(channel(c, loc))
        return torch.stack(channels, cdim)


def check_levels(x: torch.Tensor, bits: int, name: str) -> None:
    """:class:`DataError` unless every value of ``x`` is a level ``k / (2**bits - 1)``."""
    top = _levels(bits) - 1
    lo, hi = float(x.min()), float(x.max())
    k = x * top
    off = float((k - torch.round(k)).abs().max())
    if lo < 0 or hi > 1 or off > 1e-3:
        raise DataError(
            f"the {name} likelihood models {top + 1} levels k/{top} in [0, 1] ({bits}-bit pixels), "
            f"but the data are not on that grid (range [{lo:g}, {hi:g}], {off:.3g} of a level off); "
            f"use --binarize none on 8-bit images, set --likelihood-opt bits=N to the data's depth, "
            "or use --likelihood gaussian for continuous data"
        )


def _check_bits(bits: object, name: str) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 16:
        raise ConfigError(
            f"the {name} likelihood's option bits must be an integer from 1 to 16, got {bits!r}"
        )
    return bits


def _split_channels(x_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(channels, pixel shape): an image's first axis holds its channels; other data have one."""
    if len(x_shape) == 3:
        return x_shape[0], x_shape[1:]
    return 1, x_shape


@LIKELIHOODS.register("discretized-logistic")
class DiscretizedLogisticLikelihood(Likelihood):
    """x_i ~ DiscretizedLogistic(mu_i, s_i) on ``2**bits`` levels, independent over pixels and channels.

    The decoder gives a location and a log-scale per element: its output has twice the channels of
    the data (``out_shape``). Reconstructions use the exact mean of each pixel.
    """

    def __init__(self, x_shape: Sequence[int], bits: int = 8) -> None:
        super().__init__(x_shape)
        self.bits = _check_bits(bits, "discretized-logistic")
        self.discrete_bins = _levels(self.bits)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (2 * self.x_shape[0], *self.x_shape[1:])

    def dist(self, out: torch.Tensor) -> TorchDistribution:
        axis = out.dim() - len(self.x_shape)
        loc, log_scale = out.chunk(2, dim=axis)
        # a decoder's output near 0 starts as a logistic centred at mid-grey of scale ~1/8
        return DiscretizedLogistic(
            loc + 0.5, log_scale - 2.0, self.bits, len(self.x_shape), validate_args=False
        )

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.dist(out).mean

    def check(self, x: torch.Tensor) -> None:
        check_levels(x, self.bits, "discretized-logistic")


@LIKELIHOODS.register("logistic-mixture")
class LogisticMixtureLikelihood(Likelihood):
    """A mixture of ``components`` discretized logistics per pixel (PixelCNN++), RGB channels coupled.

    Per pixel the decoder gives ``K`` mixture logits and, per channel, ``K`` locations and
    log-scales, plus ``K C (C - 1) / 2`` coupling coefficients (``coupling=False``: none, channels
    independent given the component).
    """

    def __init__(
        self, x_shape: Sequence[int], components: int = 10, bits: int = 8, coupling: bool = True
    ) -> None:
        super().__init__(x_shape)
        if not isinstance(components, int) or isinstance(components, bool) or components < 1:
            raise ConfigError(
                f"the logistic-mixture likelihood's option components must be a positive integer, "
                f"got {components!r}"
            )
        self.components = components
        self.bits = _check_bits(bits, "logistic-mixture")
        self.discrete_bins = _levels(self.bits)
        self.channels, self.pixels = _split_channels(self.x_shape)
        if not coupling and self.channels == 1:
            raise ConfigError(
                "the logistic-mixture likelihood's option coupling=False changes nothing on "
                f"single-channel images {tuple(self.x_shape)} (there are no channels to couple); "
                "drop it"
            )
        self.pairs = self.channels * (self.channels - 1) // 2 if coupling else 0

    @property
    def out_shape(self) -> tuple[int, ...]:
        per_pixel = self.components * (1 + 2 * self.channels + self.pairs)
        if len(self.x_shape) == 3:
            return (per_pixel, *self.pixels)
        return (per_pixel * self.x_shape[0], *self.x_shape[1:])

    def dist(self, out: torch.Tensor) -> TorchDistribution:
        k, c = self.components, self.channels
        batch = out.shape[: out.dim() - len(self.x_shape)]
        params = out.reshape(*batch, -1, *self.pixels)
        logits, locs, log_scales, coeffs = params.split(
            [k, k * c, k * c, k * self.pairs], dim=len(batch)
        )
        locs = locs.unflatten(len(batch), (k, c)) + 0.5
        log_scales = log_scales.unflatten(len(batch), (k, c)) - 2.0
        coeffs = torch.tanh(coeffs.unflatten(len(batch), (k, self.pairs))) if self.pairs else None
        mixture = DiscretizedLogisticMixture(
            logits, locs, log_scales, coeffs, self.bits, len(self.pixels), validate_args=False
        )
        if len(self.x_shape) == 3:
            return mixture
        return _Unchanneled(mixture)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        return self.dist(out).mean

    def check(self, x: torch.Tensor) -> None:
        check_levels(x, self.bits, "logistic-mixture")


class _Unchanneled(TorchDistribution):
    """A one-channel mixture seen without its channel axis (data that are not (C, H, W) images)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, base: DiscretizedLogisticMixture) -> None:
        self.base = base
        super().__init__(base.batch_shape, base.event_shape[1:], validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.independent(_Quantized(self.base.bits), len(self.event_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(value.unsqueeze(-len(self.event_shape) - 1))

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.base.sample(torch.Size(sample_shape)).squeeze(-len(self.event_shape) - 1)

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean.squeeze(-len(self.event_shape) - 1)

    @property
    def mode(self) -> torch.Tensor:
        return self.base.mode.squeeze(-len(self.event_shape) - 1)
