"""Training objectives: Pyro ``ELBO`` instances built by name."""

from __future__ import annotations

from pyro.infer import ELBO

from ..registry import Registry

#: name -> ``factory(num_particles, **options) -> pyro.infer.ELBO``. Every objective works on the
#: traces of any model/guide pair whose data plate is the outermost plate (``max_plate_nesting=1``
#: leaves dim -2 free for vectorised particles).
OBJECTIVES: Registry[ELBO] = Registry("objective", base=ELBO, supplied=("num_particles",))
