from __future__ import annotations

from collections.abc import Sequence

from pyro.distributions.transforms import ConditionalAffineAutoregressive

from .base import GUIDES, check_hidden
from .flow import ConditionalMADE, FlowGuide, alternating_permutation


@GUIDES.register("iaf")
class InverseAutoregressiveFlow(FlowGuide):
    r"""Amortized inverse autoregressive flow (Kingma et al. 2016):

    .. math:: z_k = \sigma_k \odot z_{k-1} + (1 - \sigma_k) \odot m_k,
              \quad [m_k, s_k] = \mathrm{MADE}_k(z_{k-1}, h), \quad \sigma_k = \mathrm{sigmoid}(s_k),

    the numerically stable LSTM-type update of their eq. (14) (``stable=False``: the plain affine
    ``z_k = mu_k + exp(s_k) z_{k-1}``), on top of ``N(mu(h), diag sigma(h)^2)``. Each MADE sees the
    encoder features ``h`` as context; the variable order is reversed between layers. Pyro's
    :func:`~pyro.distributions.transforms.conditional_affine_autoregressive`. Sampling and scoring are
    one pass per layer; the ``D``-step inverse is never needed (the sample is cached).
    """

    def __init__(
        self,
        feature_dim: int,
        latent_dim: int,
        num_flows: int = 2,
        hidden: Sequence[int] | None = None,
        stable: bool = True,
        min_scale: float = 1e-5,
    ) -> None:
        # MADE needs hidden layers at least as wide as z to connect every output
        self.hidden = (
            list(check_hidden(hidden, self._owner, allow_empty=False))
            if hidden is not None
            else [max(4 * latent_dim, 16)]
        )
        self.stable = stable
        super().__init__(feature_dim, latent_dim, num_flows, min_scale)

    def make_transform(self, layer: int) -> ConditionalAffineAutoregressive:
        d = self.latent_dim
        arn = ConditionalMADE(
            d,
            self.feature_dim,
            [max(w, d) for w in self.hidden],
            param_dims=[1, 1],
            permutation=alternating_permutation(d, layer),
        )
        return ConditionalAffineAutoregressive(arn, stable=self.stable)
