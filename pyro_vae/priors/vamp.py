from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import hardtanh

from ..errors import ConfigError
from ..guides.base import check_float
from .base import PRIORS, Prior
from .mixture import diagonal_mixture

if TYPE_CHECKING:
    from torch import Tensor


@PRIORS.register("vamp")
class VampPrior(Prior):
    r"""The variational mixture of posteriors prior (Tomczak and Welling 2018):

    .. math:: p(z) = \frac{1}{K} \sum_{k=1}^{K} q(z \mid u_k),

    the model's own amortized posterior evaluated at ``K = num_pseudo`` learned pseudo-inputs ``u_k``
    (data-shaped parameters), pushed through the model's encoder and guide on every call so that the
    prior follows them through training. Pseudo-inputs start at ``N(init_mean, init_std^2)`` and, with
    ``bounded=True`` (for data in [0, 1]), pass through a hard tanh onto ``[0, 1]`` as in the paper.

    The model is found through :meth:`attach`, and supplies the components itself
    (:meth:`pyro_vae.Model.vamp_component`): by default ``q.prior_component(encoder(u))``, which is
    q(z|u) for Gaussian guides and the Gaussian base of a flow guide (flows without an inverse cannot
    score a z they did not draw); the hierarchical VAE's are q(z2 | z1 = its point summary).
    """

    def __init__(
        self,
        latent_dim: int,
        num_pseudo: int = 500,
        init_mean: float = 0.05,
        init_std: float = 0.01,
        bounded: bool = True,
    ) -> None:
        super().__init__(latent_dim)
        if not isinstance(num_pseudo, int) or isinstance(num_pseudo, bool) or num_pseudo < 1:
            raise ConfigError(f"the VampPrior needs a positive num_pseudo, got {num_pseudo!r}")
        init_mean = check_float(init_mean, "init_mean", self._owner, positive=False)
        init_std = check_float(init_std, "init_std", self._owner, allow_zero=True)
        if init_std == 0 and num_pseudo > 1:
            # identical pseudo-inputs give identical components and gradients: they never separate
            raise ConfigError(
                f"the vamp prior's option init_std must be positive with {num_pseudo} "
                "pseudo-inputs (at 0 they start identical and stay identical); set it with "
                "--prior-opt init_std=0.01"
            )
        if bounded and not 0 <= init_mean <= 1:
            # hardtanh clamps pseudo-inputs outside [0, 1] and passes them no gradient
            raise ConfigError(
                f"the vamp prior's option init_mean must lie in [0, 1] with bounded=True (the "
                f"pseudo-inputs are clamped to [0, 1] and would get no gradient), got "
                f"{init_mean!r}; set it with --prior-opt init_mean=0.05, or pass bounded=False"
            )
        self.num_pseudo = num_pseudo
        self.init_mean, self.init_std, self.bounded = init_mean, init_std, bounded
        self.pseudo_raw: nn.Parameter | None = None

    def attach(self, model: Any) -> None:
        x_shape = getattr(model, "x_shape", None)
        if x_shape is None:
            raise ConfigError("the VampPrior needs a model with an `x_shape` attribute")
        # a plain reference, not a submodule: the encoder's parameters belong to the model, and
        # registering them here too would list them twice in the state dict
        self.__dict__["_model"] = model
        if self.pseudo_raw is None or tuple(self.pseudo_raw.shape[1:]) != tuple(x_shape):
            raw = self.init_mean + self.init_std * torch.randn(self.num_pseudo, *x_shape)
            self.pseudo_raw = nn.Parameter(raw)

    def pseudo_inputs(self) -> Tensor:
        if self.pseudo_raw is None:
            raise ConfigError("the VampPrior is not attached to a model; pass it to a VAE first")
        return hardtanh(self.pseudo_raw, 0.0, 1.0) if self.bounded else self.pseudo_raw

    def forward(self) -> dist.TorchDistribution:
        u = self.pseudo_inputs()
        model = self.__dict__["_model"]
        comps = model.vamp_component(u)
        logits = torch.zeros(self.num_pseudo, dtype=u.dtype, device=u.device)
        if (
            isinstance(comps, dist.Independent)
            and isinstance(comps.base_dist, dist.Normal)
            and comps.reinterpreted_batch_ndims == 1
        ):
            return diagonal_mixture(logits, comps.base_dist.loc, comps.base_dist.scale)
        mix = dist.Categorical(logits=logits, validate_args=False)
        return dist.MixtureSameFamily(mix, comps, validate_args=False)
