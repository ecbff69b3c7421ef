"""Amortized Sylvester normalizing flows (van den Berg, Hasenclever, Tomczak and Welling 2018).

Pyro ships an unconditional Householder Sylvester flow only, so the conditional transform is written
here as a :class:`~pyro.distributions.conditional.ConditionalTransformModule` that any Pyro
``ConditionalTransformedDistribution`` accepts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions.conditional import ConditionalTransformModule
from torch.distributions import Transform, constraints

from ..errors import ConfigError
from .base import GUIDES, check_hidden, check_int
from .flow import FlowGuide, ParamNet, memoize, solve_increasing

Params = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def householder_matrix(v: torch.Tensor) -> torch.Tensor:
    """``Q = H(v_1) ... H(v_n)`` with ``H(v) = I - 2 v v^T / |v|^2``, for ``v`` of shape ``(..., n, D)``."""
    d = v.shape[-1]
    q = torch.eye(d, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], d, d)
    for i in range(v.shape[-2]):
        u = v[..., i, :]
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        q = q - 2 * (q @ u.unsqueeze(-1)) @ u.unsqueeze(-2)  # Q <- Q H(u)
    return q


class ConditionedSylvester(Transform):
    r"""``y = x + Q R tanh(R~ Q^T x + b)`` with parameters of any batch shape broadcasting over ``x``.

    ``params()`` returns ``(Q, R, R~, b)``: ``Q`` of shape ``(..., D, M)`` with orthonormal columns,
    ``R`` and ``R~`` upper triangular ``(..., M, M)`` with ``R_ii R~_ii > -1``, ``b`` of shape ``(..., M)``.
    By Sylvester's determinant identity the Jacobian determinant is
    :math:`\prod_i (1 + R_{ii} \tilde R_{ii} \tanh'(\cdot)_i)`, the triangular product.

    The inverse is exact: with ``v = Q^T x``, ``Q^T y = v + R tanh(R~ v + b)`` is upper triangular in
    ``v``, so back-substitution from the last coordinate leaves one increasing scalar equation per
    coordinate; a final differentiable Newton step on the whole system (a triangular solve) carries the
    implicit-function gradients. Then ``x = y - Q R tanh(R~ v + b)``.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params: Callable[[], Params]) -> None:
        super().__init__(cache_size=1)
        self.params = memoize(params)  # computed once per conditioning

    def _preactivation_v(self, v: torch.Tensor) -> torch.Tensor:
        _, _, r_tilde, b = self.params()
        return (v.unsqueeze(-2) @ r_tilde.transpose(-1, -2)).squeeze(-2) + b  # R~ v + b

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        q = self.params()[0]
        return (x.unsqueeze(-2) @ q).squeeze(-2)  # (..., M): Q^T x, broadcasting Q over sample dims

    def _lift(self, a: torch.Tensor) -> torch.Tensor:
        q, r, _, _ = self.params()
        ra = (a.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2)  # R a
        return (ra.unsqueeze(-2) @ q.transpose(-1, -2)).squeeze(-2)  # Q R a

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x + self._lift(torch.tanh(self._preactivation_v(self._project(x))))

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        _, r, r_tilde, b = self.params()
        t = self._project(y)
        m = t.shape[-1]
        r_ = r.expand(*t.shape[:-1], m, m)
        rt_ = r_tilde.expand(*t.shape[:-1], m, m)
        b_ = b.expand_as(t)
        with torch.no_grad():
            v = torch.zeros_like(t)
            for i in reversed(range(m)):
                rest = slice(i + 1, m)
                pre_rest = (rt_[..., rest, :] @ v.unsqueeze(-1)).squeeze(-1) + b_[..., rest]
                s = t[..., i] - (r_[..., i, rest] * torch.tanh(pre_rest)).sum(-1)
                c = (rt_[..., i, rest] * v[..., rest]).sum(-1) + b_[..., i]
                rii, rtii = r_[..., i, i], rt_[..., i, i]
                v[..., i] = solve_increasing(
                    lambda a, s=s, c=c, rii=rii, rtii=rtii: a + rii * torch.tanh(rtii * a + c) - s,
                    lambda a, c=c, rii=rii, rtii=rtii: (
                        1 + rii * rtii * (1 - torch.tanh(rtii * a + c).pow(2))
                    ),
                    s - rii.abs(),
                    s + rii.abs(),
                )
        # one differentiable Newton step on F(v) = v + R tanh(R~ v + b) - Q^T y (zero at the root)
        a = torch.tanh(self._preactivation_v(v))
        residual = v + (a.unsqueeze(-2) @ r.transpose(-1, -2)).squeeze(-2) - t
        jac = torch.eye(m, dtype=v.dtype, device=v.device) + r @ (
            (1 - a.pow(2)).unsqueeze(-1) * r_tilde
        )
        v = v - torch.linalg.solve_triangular(jac, residual.unsqueeze(-1), upper=True).squeeze(-1)
        return y - self._lift(torch.tanh(self._preactivation_v(v)))

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, r, r_tilde, _ = self.params()
        slope = 1 - torch.tanh(self._preactivation_v(self._project(x))).pow(2)
        diag = torch.diagonal(r, dim1=-2, dim2=-1) * torch.diagonal(r_tilde, dim1=-2, dim2=-1)
        return torch.log1p(diag * slope).sum(-1)


class ConditionalSylvester(ConditionalTransformModule):
    r"""Sylvester flow whose ``Q, R, R~, b`` are functions of a context ``h``.

    ``kind="orthogonal"``: ``Q`` is the ``Q`` factor of a QR decomposition of an amortized ``D x M``
    matrix (van den Berg et al. orthogonalise iteratively with Bjorck's method; QR is exact, so the
    log-determinant formula holds exactly). ``kind="householder"``: ``Q`` is a product of
    ``num_householder`` amortized Householder reflections and ``M = D``. Diagonals of ``R`` and ``R~``
    pass through ``tanh`` so that ``R_ii R~_ii > -1`` and the map is invertible (their section 3.1).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        kind: str = "orthogonal",
        columns: int | None = None,
        num_householder: int | None = None,
        hidden: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if kind not in ("orthogonal", "householder"):
            raise ConfigError(f"Sylvester kind must be orthogonal or householder, got {kind!r}")
        unused = "columns" if kind == "householder" else "num_householder"
        if (columns if kind == "householder" else num_householder) is not None:
            raise ConfigError(
                f"the Sylvester guide's option {unused} is not used by kind={kind} (columns sets "
                "the orthogonal kind's Q, num_householder the householder kind's reflections); "
                f"drop {unused} or change kind"
            )
        d = input_dim
        m = d if kind == "householder" or columns is None else int(columns)
        if not 1 <= m <= d:
            raise ConfigError(f"Sylvester columns must lie in 1..{d} (the latent size), got {m}")
        h = num_householder if num_householder is not None else min(d, 8)
        if kind == "householder" and h < 1:
            raise ConfigError(f"num_householder must be positive, got {h}")
        self.input_dim, self.kind, self.columns, self.num_householder = d, kind, m, h
        q_dim = d * m if kind == "orthogonal" else h * d
        # one M x M matrix gives both triangles, R from its upper and R~ from its lower part, as in
        # the authors' code: half the amortization cost of two matrices
        self.nn = ParamNet(context_dim, hidden, [m * m, m, m, m, q_dim])
        self.register_buffer("triu", torch.ones(m, m).triu(1), persistent=False)

    def _params(self, context: torch.Tensor) -> Params:
        d, m = self.input_dim, self.columns
        full, r_diag, rt_diag, b, q_raw = self.nn(context)
        batch = context.shape[:-1]
        triu = self.triu.to(context.dtype)
        full = full.reshape(*batch, m, m)
        r = full * triu + torch.diag_embed(torch.tanh(r_diag))
        r_tilde = full.transpose(-1, -2) * triu + torch.diag_embed(torch.tanh(rt_diag))
        if self.kind == "orthogonal":
            # an identity-like offset keeps the matrix well conditioned at initialisation
            eye = torch.eye(d, m, dtype=context.dtype, device=context.device)
            q, _ = torch.linalg.qr(q_raw.reshape(*batch, d, m) + eye)
        else:
            q = householder_matrix(q_raw.reshape(*batch, self.num_householder, d))
        return q, r, r_tilde, b

    def condition(self, context: torch.Tensor) -> ConditionedSylvester:
        return ConditionedSylvester(lambda: self._params(context))


@GUIDES.register("sylvester")
class SylvesterFlow(FlowGuide):
    r"""Amortized Sylvester normalizing flows (van den Berg et al. 2018):

    .. math:: z_k = z_{k-1} + Q_k R_k \tanh(\tilde R_k Q_k^\top z_{k-1} + b_k), \quad k = 1..K,

    on top of ``N(mu(h), diag sigma(h)^2)``, with every ``Q_k, R_k, R~_k, b_k`` a function of the encoder
    features ``h``. ``kind`` is ``"orthogonal"`` (``Q_k`` has ``columns`` orthonormal columns, default
    ``D``) or ``"householder"`` (``Q_k`` a product of ``num_householder`` reflections).
    A generalisation of planar flows (``M = 1``) without their single-unit bottleneck.
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_flows: int = 4,
        kind: str = "orthogonal",
        columns: int | None = None,
        num_householder: int | None = None,
        hidden: Sequence[int] = (),
        min_scale: float = 1e-5,
    ) -> None:
        if columns is not None:
            columns = check_int(columns, "columns", self._owner, 1, latent_dim)
        if num_householder is not None:
            num_householder = check_int(num_householder, "num_householder", self._owner)
        self.kind, self.columns, self.num_householder = kind, columns, num_householder
        self.hidden = check_hidden(hidden, self._owner)
        super().__init__(feature_dim, latent_dim, num_flows, min_scale)

    def make_transform(self, layer: int) -> ConditionalSylvester:
        return ConditionalSylvester(
            self.latent_dim,
            self.feature_dim,
            kind=self.kind,
            columns=self.columns,
            num_householder=self.num_householder,
            hidden=self.hidden,
        )
