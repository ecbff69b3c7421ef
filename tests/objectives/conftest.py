from __future__ import annotations

import pyro
import pytest


@pytest.fixture(autouse=True)
def _fresh_pyro():
    # pyro.module() registers into a global store: start every test from an empty one
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()
