"""Pyro's global parameter store, checked to hold the trained model's own parameters.

``pyro.module(name, module)`` registers a module's parameters under ``name$$$<parameter>``; when the
store already holds that name (another module registered under the same ``name``, e.g. a second
object of a user's class that hard-codes it), Pyro returns the stored tensor and SVI trains *that*
one, leaving the model's own parameters where they were. :class:`OwnParameters` turns that into an
error naming the clash.
"""

from __future__ import annotations

from typing import Any

import pyro
from pyro.poutine.messenger import Messenger
from torch import nn

from .errors import ConfigError

#: Pyro's separator between a module's name and its parameter's (pyro.nn.module)
_DIVIDER = "$$$"


class OwnParameters(Messenger):
    """Refuse a ``pyro.module`` parameter whose entry in Pyro's store is not a parameter of
    ``module``, the model being trained (each name is checked once)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.own = {p._cdata for p in module.parameters()}
        self.seen: set[str] = set()

    def _pyro_post_param(self, msg: dict[str, Any]) -> None:
        name = msg["name"]
        if name in self.seen or _DIVIDER not in name:
            return  # a plain pyro.param belongs to the store itself
        self.seen.add(name)
        stored = pyro.get_param_store()._params.get(name)
        if stored is None or stored._cdata in self.own:
            return
        prefix = name.split(_DIVIDER, 1)[0]
        raise ConfigError(
            f"Pyro's parameter store maps {name!r} to a tensor of another module, not of the model "
            f"being trained: two modules were registered with pyro.module under the name "
            f"{prefix!r}, and training would update the other one. Give each model its own name "
            "in pyro.module (pyro-vae's models take name=...), or clear the store first with "
            "pyro.clear_param_store()"
        )
