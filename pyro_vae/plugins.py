"""Plugins: a user's own guides, priors, objectives, likelihoods, networks, models and data sets.

A plugin is a module that registers its parts on import (``@GUIDES.register("my-guide")``). The CLI
finds it in two ways: ``--import MODULE`` on any command, or an installed package that declares the
module under the entry-point group ``pyro_vae.plugins``::

    [project.entry-points."pyro_vae.plugins"]
    my_parts = "my_package.vae_parts"

Entry-point plugins load the first time a registry is asked for a name it does not hold, so the
Python API finds them too.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from pathlib import Path

from .errors import ConfigError

GROUP = "pyro_vae.plugins"
_entry_points_loaded = False


def load_entry_points() -> list[str]:
    """Import every module declared under :data:`GROUP` (once per process); their names."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return []
    _entry_points_loaded = True
    loaded = []
    for ep in importlib.metadata.entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as e:
            raise ConfigError(
                f"the pyro-vae plugin {ep.name!r} ({ep.value}) failed to load: "
                f"{type(e).__name__}: {e}"
            ) from None
        loaded.append(ep.value)
    return loaded


def import_plugin(module: str) -> None:
    """Import ``module`` (``--import MODULE``), with the current directory on the path as ``python -m``
    would have it."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"--import {module}: {e}; give an importable module name (on PYTHONPATH or in the "
            "current directory), e.g. --import my_parts for my_parts.py"
        ) from None
