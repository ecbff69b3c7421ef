"""Encoder and decoder networks.

Encoders map a batch of data ``(..., *x_shape)`` to features ``(..., feature_dim)``; the guide turns the
features into q(z|x). Decoders map latents ``(..., in_dim)`` to the likelihood's parameters
``(..., *x_shape)``. Both accept any number of leading batch dimensions, because vectorised particles
put a particle dimension in front of the data batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .describe import Described
from .errors import ConfigError
from .registry import Registry

if TYPE_CHECKING:
    from pyro.distributions import TorchDistribution

    from .likelihoods import Likelihood

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


#: the dtype the encoder and decoder networks compute in under ``--precision bf16-mixed`` (None:
#: float32). Only the networks are autocast: their outputs are cast back to float32, so the
#: distributions, log-densities, flows and bounds (log-sum-exp over particles) stay in float32.
_AUTOCAST: ContextVar[torch.dtype | None] = ContextVar("pyro_vae_autocast", default=None)


@contextlib.contextmanager
def network_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the encoder and decoder networks under autocast to ``dtype`` within this block."""
    token = _AUTOCAST.set(dtype)
    try:
        yield
    finally:
        _AUTOCAST.reset(token)


def run_network(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``net(x)``, under autocast when :func:`network_precision` asks for it, returned in float32."""
    dtype = _AUTOCAST.get()
    if dtype is None:
        return net(x)
    with torch.autocast(x.device.type, dtype=dtype):
        out = net(x)
    return out.float()


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}: choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


def mlp(sizes: Sequence[int], act: str = "relu", final_activation: bool = False) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` through ``sizes`` (input size first)."""
    layers: list[nn.Module] = []
    for i, (m, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(m, n))
        if i < len(sizes) - 2 or final_activation:
            layers.append(activation(act))
    return nn.Sequential(*layers)


class MLPEncoder(Described, nn.Module):
    """Flatten the event dimensions, then ``hidden`` dense layers, each followed by ``act``."""

    def __init__(
        self, x_shape: Sequence[int], hidden: Sequence[int] = (400,), act: str = "relu"
    ) -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("an MLP encoder needs at least one hidden layer (--hidden 400)")
        self.x_shape = tuple(x_shape)
        self.net = mlp([math.prod(self.x_shape), *hidden], act, final_activation=True)
        self.feature_dim = hidden[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_network(self.net, x.flatten(-len(self.x_shape)))


class Decoder(Described, nn.Module):
    """The decoder contract: ``forward(z)`` maps latents ``(..., in_dim)`` to the likelihood's
    parameters, and :meth:`distribution` gives p(x | z) from them.

    An autoregressive decoder, whose parameters for one pixel depend on the pixels before it,
    overrides :meth:`distribution` and :meth:`mean` (see :mod:`pyro_vae.pixelcnn`).
    """

    def distribution(self, z: torch.Tensor, likelihood: Likelihood) -> TorchDistribution:
        return likelihood(self(z))

    def mean(self, z: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
        """The datum reconstructions and sample grids show for ``z``."""
        return likelihood.mean(self(z))


def observation(decoder: nn.Module, likelihood: Likelihood, z: torch.Tensor) -> TorchDistribution:
    """p(x | z) through ``decoder`` (a :class:`Decoder`, or any module giving the likelihood's
    parameters)."""
    if isinstance(decoder, Decoder):
        return decoder.distribution(z, likelihood)
    return likelihood(decoder(z))


def observation_mean(decoder: nn.Module, likelihood: Likelihood, z: torch.Tensor) -> torch.Tensor:
    """The datum shown for ``z`` (:meth:`Decoder.mean`)."""
    if isinstance(decoder, Decoder):
        return decoder.mean(z, likelihood)
    return likelihood.mean(decoder(z))


class MLPDecoder(Decoder):
    """``hidden`` dense layers (reversed encoder widths by convention), then a linear map to
    ``out_shape`` (the likelihood's parameters; by default ``x_shape``)."""

    def __init__(
        self,
        in_dim: int,
        x_shape: Sequence[int],
        hidden: Sequence[int] = (400,),
        act: str = "relu",
        out_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.x_shape = tuple(out_shape if out_shape is not None else x_shape)
        self.net = mlp([in_dim, *hidden, math.prod(self.x_shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return run_network(self.net, z).unflatten(-1, self.x_shape)


def _conv_shape(x_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(x_shape) != 3 or x_shape[1] % 4 or x_shape[2] % 4:
        raise ConfigError(
            f"the conv networks need images (C, H, W) with H and W divisible by 4, got {tuple(x_shape)}; "
            "use --network mlp for this data"
        )
    return x_shape[0], x_shape[1], x_shape[2]


class ConvEncoder(Described, nn.Module):
    """Two stride-2 4x4 convolutions (32, 64 channels) then a dense layer of ``hidden[-1]`` units."""

    def __init__(
        self, x_shape: Sequence[int], hidden: Sequence[int] = (256,), act: str = "relu"
    ) -> None:
        super().__init__()
        c, h, w = _conv_shape(x_shape)
        self.x_shape = (c, h, w)
        width = hidden[-1] if hidden else 256
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1),
            activation(act),
            nn.Conv2d(32, 64, 4, 2, 1),
            activation(act),
            nn.Flatten(),
            nn.Linear(64 * (h // 4) * (w // 4), width),
            activation(act),
        )
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        return run_network(self.net, x.reshape(-1, *self.x_shape)).reshape(*batch, self.feature_dim)


class ConvDecoder(Decoder):
    """Mirror of :class:`ConvEncoder`: dense, then two stride-2 transposed convolutions to the
    channels of ``out_shape`` (the likelihood's parameters per pixel; by default the data's)."""

    def __init__(
        self,
        in_dim: int,
        x_shape: Sequence[int],
        hidden: Sequence[int] = (256,),
        act: str = "relu",
        out_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        _, h, w = _conv_shape(x_shape)
        c = _out_channels(x_shape, out_shape)
        self.x_shape = (c, h, w)
        width = hidden[-1] if hidden else 256
        self.net = nn.Sequential(
            nn.Linear(in_dim, width),
            activation(act),
            nn.Linear(width, 64 * (h // 4) * (w // 4)),
            activation(act),
            nn.Unflatten(1, (64, h // 4, w // 4)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            activation(act),
            nn.ConvTranspose2d(32, c, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        return run_network(self.net, z.reshape(-1, z.shape[-1])).reshape(*batch, *self.x_shape)


def _out_channels(x_shape: Sequence[int], out_shape: Sequence[int] | None) -> int:
    """The channels a conv decoder outputs: ``out_shape``'s, on the data's own pixel grid."""
    if out_shape is None:
        return int(x_shape[0])
    if tuple(out_shape[1:]) != tuple(x_shape[1:]):
        raise ConfigError(
            f"a conv decoder outputs parameters on the data's pixel grid {tuple(x_shape[1:])}, but "
            f"the likelihood asks for {tuple(out_shape)}; use --network mlp with this likelihood"
        )
    return int(out_shape[0])


class Networks:
    """An encoder/decoder pair factory: ``encoder(x_shape)`` and ``decoder(in_dim, x_shape)``, built
    as ``encoder_cls(x_shape, *encoder_args(hidden, act))`` and ``decoder_cls(in_dim, x_shape,
    *decoder_args(hidden, act), out_shape)``.

    A registered network family with options subclasses this, takes them as keyword arguments of
    its constructor (``--network-opt channels=64``), so the registry types and checks them, and
    passes them on to its classes by overriding ``encoder_args`` and ``decoder_args``.
    """

    encoder_cls: type[nn.Module]
    decoder_cls: type[nn.Module]

    def __init__(self, encoder: type[nn.Module], decoder: type[nn.Module]) -> None:
        self.encoder_cls = encoder
        self.decoder_cls = decoder

    def encoder_args(self, hidden: Sequence[int], act: str) -> tuple[Any, ...]:
        """The encoder class's arguments after ``x_shape``: the MLP/conv ones read every width."""
        return hidden, act

    def decoder_args(self, hidden: Sequence[int], act: str) -> tuple[Any, ...]:
        """The decoder class's arguments between ``x_shape`` and ``out_shape``: the encoder's widths
        in reverse."""
        return tuple(reversed(hidden)), act

    def encoder(self, x_shape: Sequence[int], hidden: Sequence[int], act: str) -> nn.Module:
        return self.encoder_cls(x_shape, *self.encoder_args(hidden, act))

    def decoder(
        self,
        in_dim: int,
        x_shape: Sequence[int],
        hidden: Sequence[int],
        act: str,
        out_shape: Sequence[int] | None = None,
    ) -> nn.Module:
        """The decoder from ``in_dim`` latents to ``out_shape`` parameters (default: ``x_shape``)."""
        return self.decoder_cls(in_dim, x_shape, *self.decoder_args(hidden, act), out_shape)


NETWORKS: Registry[Networks] = Registry("network", base=Networks)
NETWORKS.register("mlp")(lambda: Networks(MLPEncoder, MLPDecoder))
NETWORKS.register("conv")(lambda: Networks(ConvEncoder, ConvDecoder))
