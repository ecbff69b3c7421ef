from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ConditionalPlanar
from pyro.distributions.transforms.planar import ConditionedPlanar

from .base import GUIDES, check_hidden
from .flow import FlowGuide, ParamNet, memoize, solve_increasing


class InvertiblePlanar(ConditionedPlanar):
    r"""Pyro's conditioned planar transform ``y = x + u^ tanh(w^T x + b)`` with an exact inverse.

    With ``a = w^T x + b`` and ``c = w^T u^ > -1``, ``w^T y + b = a + c tanh(a)``: a scalar equation
    increasing in ``a``, bracketed by ``w^T y + b -/+ |c|``; then ``x = y - u^ tanh(a)``. The
    log-determinant is computed from ``x`` (no state kept between calls).
    """

    def _parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bias, u, w = self._params()
        return bias, self.u_hat(u, w), w

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        bias, u_hat, w = self._parts()
        c = (w * u_hat).sum(-1, keepdim=True)
        s = (w * y).sum(-1, keepdim=True) + bias
        a = solve_increasing(
            lambda a: a + c * torch.tanh(a) - s,
            lambda a: 1 + c * (1 - torch.tanh(a).pow(2)),
            s - c.abs(),
            s + c.abs(),
        )
        return y - u_hat * torch.tanh(a)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        bias, u_hat, w = self._parts()
        act = torch.tanh((w * x).sum(-1, keepdim=True) + bias)
        return torch.log(torch.abs(1 + ((1 - act.pow(2)) * w * u_hat).sum(-1)))


class ConditionalInvertiblePlanar(ConditionalPlanar):
    """Pyro's :class:`~pyro.distributions.transforms.ConditionalPlanar`, conditioning to
    :class:`InvertiblePlanar` with its parameters computed once per context.

    With a ``centre`` the network's bias is read relative to it: ``b = b_net - w^T centre``, so the
    hyperplane ``w^T z + b = 0`` passes near ``centre`` when ``b_net`` is small.
    """

    def condition(
        self, context: torch.Tensor, centre: torch.Tensor | None = None
    ) -> InvertiblePlanar:
        if centre is None:
            return InvertiblePlanar(memoize(partial(self._params, context)))

        def params() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            bias, u, w = self._params(context)
            return bias - (w * centre).sum(-1, keepdim=True), u, w

        return InvertiblePlanar(memoize(params))


@GUIDES.register("planar")
class PlanarFlow(FlowGuide):
    r"""Amortized planar flows (Rezende and Mohamed 2015, section 4.1):

    .. math:: z_k = z_{k-1} + \hat u_k(h) \tanh(w_k(h)^\top z_{k-1} + b_k(h)), \quad k = 1..K,

    on top of ``z_0 ~ N(mu(h), diag sigma(h)^2)``, with ``(b_k, u_k, w_k)`` a map of the encoder
    features ``h`` (linear by default as in the paper; ``hidden`` adds layers) and :math:`\hat u` Pyro's
    reparameterisation that keeps :math:`w^\top \hat u > -1` so every layer is invertible. Built on
    Pyro's :class:`~pyro.distributions.transforms.ConditionalPlanar`; ``num_flows`` is K.

    ``centred`` (default) amortizes the bias relative to the flow's mean path,
    :math:`b_k(h) = \tilde b_k(h) - w_k(h)^\top m_{k-1}(h)` with :math:`m_0 = \mu(h)` and
    :math:`m_k = T_k(m_{k-1})`: the same family, but the tanh is centred on each data point's
    posterior. Why: the bias that centres a layer on a posterior is :math:`-w^\top \mu`, quadratic in
    ``h``, which the paper's linear map cannot produce; as posteriors narrow during training its
    layers drift into the saturated part of tanh, where they are plain translations with no gradient
    to escape (on MNIST after 3 epochs, 9 of 10 layers had log-determinant 0). ``centred=False`` is the
    paper's parameterisation.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_flows: int = 10,
        hidden: Sequence[int] = (),
        min_scale: float = 1e-5,
        centred: bool = True,
    ) -> None:
        self.hidden = check_hidden(hidden, self._owner)
        self.centred = bool(centred)
        super().__init__(feature_dim, latent_dim, num_flows, min_scale)

    def make_transform(self, layer: int) -> ConditionalInvertiblePlanar:
        d = self.latent_dim
        return ConditionalInvertiblePlanar(ParamNet(self.feature_dim, self.hidden, [1, d, d]))

    def forward(self, h: torch.Tensor) -> dist.TorchDistribution:
        if not self.centred:
            return super().forward(h)
        base = self.base(h)
        centre = self.base.mean(h)
        transforms = []
        for layer in self.transforms:
            t = layer.condition(h, centre)
            centre = t._call(centre)  # not t(centre): that would fill the sample cache
            transforms.append(t)
        return dist.TransformedDistribution(base, transforms)
