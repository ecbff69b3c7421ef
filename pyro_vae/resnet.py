"""Residual convolutional encoder and decoder for images of any size and channel count.

The encoder halves the resolution ``levels`` times (stride-2 convolutions, rounding up, so odd sizes
work) with ``blocks`` residual blocks at each resolution, then maps the flattened features to
``hidden[-1]`` units. The decoder mirrors it, upsampling to the exact sizes the encoder passed
through, and ends in a 3x3 convolution to the likelihood's parameters per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .errors import ConfigError
from .nn import NETWORKS, Decoder, Networks, _out_channels, activation, run_network


def _image_shape(x_shape: Sequence[int]) -> tuple[int, int, int]:
    if len(x_shape) != 3:
        raise ConfigError(
            f"the resnet networks need images (C, H, W), got data of shape {tuple(x_shape)}; use "
            "--network mlp for this data"
        )
    return int(x_shape[0]), int(x_shape[1]), int(x_shape[2])


def _sizes(h: int, w: int, levels: int) -> list[tuple[int, int]]:
    """The resolutions the encoder passes through, full size first."""
    sizes = [(h, w)]
    for _ in range(levels):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        sizes.append((h, w))
    return sizes


class ResidualBlock(nn.Module):
    """``x + conv(act(conv(act(x))))``, pre-activation; the last convolution starts at zero so a
    fresh block is the identity."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            activation(act),
            nn.Conv2d(channels, channels, 3, padding=1),
            activation(act),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNetEncoder(nn.Module):
    def __init__(
        self, x_shape: Sequence[int], width: int, act: str, channels: int, blocks: int, levels: int
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(x_shape)
        self.x_shape = (c, h, w)
        layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1)]
        for _ in range(levels):
            layers += [ResidualBlock(channels, act) for _ in range(blocks)]
            layers.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
        layers += [ResidualBlock(channels, act) for _ in range(blocks)]
        bh, bw = _sizes(h, w, levels)[-1]
        layers += [activation(act), nn.Flatten(), nn.Linear(channels * bh * bw, width)]
        layers.append(activation(act))
        self.net = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        out = run_network(self.net, x.reshape(-1, *self.x_shape))
        return out.reshape(*batch, self.feature_dim)


class ResNetDecoder(Decoder):
    def __init__(
        self,
        in_dim: int,
        x_shape: Sequence[int],
        width: int,
        act: str,
        channels: int,
        blocks: int,
        levels: int,
        out_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        c, h, w = _image_shape(x_shape)
        out_c = _out_channels((c, h, w), out_shape)
        self.x_shape = (out_c, h, w)
        sizes = _sizes(h, w, levels)
        bh, bw = sizes[-1]
        layers: list[nn.Module] = [
            nn.Linear(in_dim, width),
            activation(act),
            nn.Linear(width, channels * bh * bw),
            nn.Unflatten(1, (channels, bh, bw)),
        ]
        layers += [ResidualBlock(channels, act) for _ in range(blocks)]
        for size in reversed(sizes[:-1]):
            layers += [nn.Upsample(size=size), nn.Conv2d(channels, channels, 3, padding=1)]
            layers += [ResidualBlock(channels, act) for _ in range(blocks)]
        layers += [activation(act), nn.Conv2d(channels, out_c, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        batch = z.shape[:-1]
        out = run_network(self.net, z.reshape(-1, z.shape[-1]))
        return out.reshape(*batch, *self.x_shape)


def check_positive(value: object, what: str, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{what} must be an integer of at least {least}, got {value!r}")
    return value


@NETWORKS.register("resnet")
class ResNet(Networks):
    """Residual conv encoder/decoder: ``channels`` feature maps, ``blocks`` residual blocks per
    resolution, ``levels`` halvings of the resolution; the dense layer between the convolutions and
    the latent has ``--hidden``'s last width."""

    encoder_cls = ResNetEncoder
    decoder_cls: type[nn.Module] = ResNetDecoder

    def __init__(self, channels: int = 32, blocks: int = 1, levels: int = 2) -> None:
        self.channels = check_positive(channels, "the resnet network's option channels")
        self.blocks = check_positive(blocks, "the resnet network's option blocks", least=0)
        self.levels = check_positive(levels, "the resnet network's option levels", least=0)

    def encoder_args(self, hidden: Sequence[int], act: str) -> tuple[Any, ...]:
        """``hidden[-1]`` units between the convolutions and the latent, then the options."""
        return hidden[-1], act, self.channels, self.blocks, self.levels

    decoder_args = encoder_args
