"""Variational families q(z|x), amortised over the encoder's features."""

from .base import GUIDES, AmortizedGuide
from .diagonal import DiagonalNormal

__all__ = ["GUIDES", "AmortizedGuide", "DiagonalNormal"]
