"""Variational families q(z|x), amortised over the encoder's features."""

from .base import GUIDES, AmortizedGuide
from .diagonal import DiagonalNormal
from .flow import FlowGuide
from .iaf import InverseAutoregressiveFlow
from .lowrank import LowRankNormal
from .planar import PlanarFlow
from .radial import RadialFlow
from .spline import NeuralSplineFlow
from .sylvester import ConditionalSylvester, SylvesterFlow

__all__ = [
    "GUIDES",
    "AmortizedGuide",
    "ConditionalSylvester",
    "DiagonalNormal",
    "FlowGuide",
    "InverseAutoregressiveFlow",
    "LowRankNormal",
    "NeuralSplineFlow",
    "PlanarFlow",
    "RadialFlow",
    "SylvesterFlow",
]
