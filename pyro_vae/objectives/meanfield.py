from __future__ import annotations

from pyro.infer import TraceMeanField_ELBO

from ..describe import Described
from .base import OBJECTIVES


class MeanFieldELBO(Described, TraceMeanField_ELBO):
    """Pyro's :class:`~pyro.infer.TraceMeanField_ELBO`, recording the arguments it was built with."""


@OBJECTIVES.register("meanfield")
def meanfield(num_particles: int = 1, max_plate_nesting: int = 1) -> TraceMeanField_ELBO:
    r"""The ELBO with the KL term in closed form where one exists (Kingma and Welling 2014, eq. 10):

    .. math:: \mathcal{L}(x) = \mathbb{E}_{q(z|x)}[\log p(x|z)] - \mathrm{KL}(q(z|x) \,\|\, p(z)),

    falling back to Monte Carlo for sites with no registered KL. Pyro's
    :class:`~pyro.infer.TraceMeanField_ELBO`.
    """
    return MeanFieldELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=max_plate_nesting,
    )
