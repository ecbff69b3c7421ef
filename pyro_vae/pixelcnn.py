"""An autoregressive decoder: a conditional PixelCNN (van den Oord et al. 2016; PixelVAE, Gulrajani et
al. 2017).

p(x | z) = prod_i p(x_i | x_<i, z) over pixels in raster order, all channels of a pixel at once
(the likelihood couples them, e.g. the logistic mixture's R -> G -> B). z is upsampled by a residual
decoder to a context map; gated masked convolutions
``tanh(W_f * x + V_f c) * sigmoid(W_g * x + V_g c)`` then read the pixels before each pixel. The
first convolution's mask hides the centre pixel (type A), later ones may read their own position
(type B), whose features already exclude it; 1x1 convolutions keep that.

Scoring is one pass (teacher forcing); generation draws pixel by pixel, H x W passes. A stack of
single masked convolutions has the original PixelCNN's blind spot (pixels up and to the right are
reached late or not at all); the exactness of p(x | z) does not depend on it, only how much of the
past each pixel sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.nn import functional as F

from .errors import ConfigError
from .nn import NETWORKS, Decoder, activation, run_network
from .resnet import ResNet, ResNetDecoder, check_positive

if TYPE_CHECKING:
    from .likelihoods import Likelihood


class MaskedConv2d(nn.Conv2d):
    """A convolution that reads only pixels before the centre in raster order (and the centre
    itself when ``centre=True``), every channel of those pixels."""

    def __init__(self, cin: int, cout: int, kernel: int, centre: bool) -> None:
        super().__init__(cin, cout, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        k = kernel // 2
        mask[:, :, k, k + int(centre) :] = 0
        mask[:, :, k + 1 :, :] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class GatedLayer(nn.Module):
    def __init__(self, cin: int, channels: int, context: int, kernel: int, centre: bool) -> None:
        super().__init__()
        self.conv = MaskedConv2d(cin, 2 * channels, kernel, centre)
        self.cond = nn.Conv2d(context, 2 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        self.residual = cin == channels and centre

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        f, g = (self.conv(x) + self.cond(c)).chunk(2, 1)
        h = self.out(torch.tanh(f) * torch.sigmoid(g))
        return x + h if self.residual else h


class PixelCNNDecoder(Decoder):
    """p(x | z) autoregressive over pixels; ``forward`` is not defined (there are no parameters
    without the pixels): use :meth:`distribution` or :func:`pyro_vae.nn.observation`."""

    def __init__(
        self,
        in_dim: int,
        x_shape: Sequence[int],
        width: int,
        act: str,
        channels: int,
        layers: int,
        kernel: int,
        blocks: int,
        levels: int,
        out_shape: Sequence[int] | None,
    ) -> None:
        super().__init__()
        c, h, w = (int(s) for s in x_shape)
        out = tuple(out_shape) if out_shape is not None else (c, h, w)
        if out[1:] != (h, w):
            raise ConfigError(
                f"the pixelcnn decoder outputs parameters per pixel of {(h, w)}, but the likelihood "
                f"asks for {out}; use another --network with this likelihood"
            )
        self.x_shape = (c, h, w)
        self.out_shape = out
        self.context = ResNetDecoder(
            in_dim, x_shape, width, act, channels, blocks, levels, (channels, h, w)
        )
        self.layers = nn.ModuleList(
            [GatedLayer(c, channels, channels, kernel, centre=False)]
            + [
                GatedLayer(channels, channels, channels, kernel, centre=True)
                for _ in range(layers - 1)
            ]
        )
        self.head = nn.Sequential(activation(act), nn.Conv2d(channels, out[0], 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            "an autoregressive decoder has no parameters without the pixels; use "
            "decoder.distribution(z, likelihood) or decoder.conditional(x, context)"
        )

    def conditional(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The likelihood's parameters of every pixel given the pixels before it, in one pass:
        ``x`` and ``context`` of the same batch shape."""
        batch = context.shape[:-3]
        x = x.expand(*batch, *self.x_shape).reshape(-1, *self.x_shape)
        c = context.reshape(-1, *context.shape[-3:])

        def net(inputs: torch.Tensor) -> torch.Tensor:
            h = inputs * 2 - 1
            for layer in self.layers:
                h = layer(h, c)
            return self.head(h)

        return run_network(net, x).reshape(*batch, *self.out_shape)

    def distribution(self, z: torch.Tensor, likelihood: Likelihood) -> TorchDistribution:
        return Autoregressive(self, self.context(z), likelihood)

    def mean(self, z: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
        """Greedy decoding: each pixel the likelihood's mean given the means before it."""
        return Autoregressive(self, self.context(z), likelihood).generate(likelihood.mean)


class Autoregressive(TorchDistribution):
    """p(x | context) = prod_i likelihood(x_i | decoder(x_<i, context)), pixels in raster order."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, decoder: PixelCNNDecoder, context: torch.Tensor, likelihood: Likelihood):
        self.decoder, self.context, self.likelihood = decoder, context, likelihood
        super().__init__(context.shape[:-3], torch.Size(decoder.x_shape), validate_args=False)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return self.likelihood(self.context.new_zeros(self.likelihood.out_shape)).support

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001, ANN201
        context = self.context.expand(*batch_shape, *self.context.shape[-3:])
        return Autoregressive(self.decoder, context, self.likelihood)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        shape = torch.broadcast_shapes(value.shape[:-3], self.batch_shape)
        context = self.context.expand(*shape, *self.context.shape[-3:])
        out = self.decoder.conditional(value, context)
        return self.likelihood(out).log_prob(value)

    def generate(self, pick) -> torch.Tensor:  # noqa: ANN001
        """Pixel by pixel: each pixel ``pick(parameters)`` given the pixels drawn before it."""
        c, h, w = self.decoder.x_shape
        x = self.context.new_zeros(*self.batch_shape, c, h, w)
        with torch.no_grad():
            for i in range(h):
                for j in range(w):
                    drawn = pick(self.decoder.conditional(x, self.context))
                    x[..., i, j] = drawn[..., i, j]
        return x

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        if shape:
            return Autoregressive(
                self.decoder, self.context.expand(*shape, *self.context.shape), self.likelihood
            ).sample()
        return self.generate(lambda out: self.likelihood(out).sample())


@NETWORKS.register("pixelcnn")
class PixelCNN(ResNet):
    """A residual conv encoder and an autoregressive decoder: the residual decoder's map of z
    conditions ``layers`` gated masked convolutions of ``kernel`` x ``kernel`` with ``channels``
    feature maps (``blocks`` and ``levels``: the residual networks', see ``resnet``)."""

    decoder_cls = PixelCNNDecoder

    def __init__(
        self, channels: int = 32, layers: int = 4, kernel: int = 5, blocks: int = 1, levels: int = 2
    ) -> None:
        self.channels = check_positive(channels, "the pixelcnn network's option channels")
        self.layers = check_positive(layers, "the pixelcnn network's option layers")
        self.kernel = check_positive(kernel, "the pixelcnn network's option kernel", least=3)
        if self.kernel % 2 == 0:
            raise ConfigError(f"the pixelcnn network's option kernel must be odd, got {kernel}")
        self.blocks = check_positive(blocks, "the pixelcnn network's option blocks", least=0)
        self.levels = check_positive(levels, "the pixelcnn network's option levels", least=0)

    def decoder_args(self, hidden: Sequence[int], act: str) -> tuple[Any, ...]:
        return hidden[-1], act, self.channels, self.layers, self.kernel, self.blocks, self.levels
