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
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from .errors import ConfigError
from .usercode import remember_users_module, users_code

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
        with users_code(f"the pyro-vae plugin {ep.name!r} ({ep.value})", "failed to load"):
            plugin = ep.load()
        remember_users_module(plugin if inspect.ismodule(plugin) else plugin.__module__)
        loaded.append(ep.value)
    return loaded


def import_plugin(module: str | os.PathLike) -> None:
    """Import a plugin (``--import MODULE``): ``module`` is a module name, found on the path as it is
    (the current directory is *not* added: a file there named like a dependency, ``sklearn.py``,
    would be run in its place whenever that dependency is imported), or the path of a ``.py`` file
    (``./my_parts.py``), imported as a module of its file name without touching the path.

    A plugin that raises, has a syntax error, calls ``exit()`` or registers a name twice is a
    one-line :class:`UserCodeError` naming the module, not a traceback."""
    text = os.fspath(module)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--import needs a module name or a .py file, got {module!r}")
    if text.endswith(".py") or os.sep in text or "/" in text:
        _import_file(Path(text).expanduser())
        return
    try:
        spec = importlib.util.find_spec(text)
    except (ImportError, ValueError) as e:  # a parent package missing, or an empty name part
        spec = None
        reason = str(e)
    else:
        reason = f"no module named {text!r}"
    if spec is None:
        local = Path(text.replace(".", os.sep) + ".py")
        hint = (
            f"; the file {local} here is imported as --import ./{local} (the current directory is "
            "not on the path)"
            if local.is_file()
            else "; give a module on the path (PYTHONPATH) or the path of a .py file, e.g. "
            "--import ./my_parts.py"
        )
        raise ConfigError(f"--import {text}: {reason}{hint}")
    with users_code(f"--import {text}", "failed"):
        importlib.import_module(text)
    remember_users_module(text)


def _import_file(path: Path) -> None:
    name = path.stem
    if not path.is_file():
        raise ConfigError(f"--import {path}: no such file")
    if not name.isidentifier():
        raise ConfigError(
            f"--import {path}: {name!r} is not a module name; rename the file (letters, digits "
            "and _)"
        )
    loaded = sys.modules.get(name)
    if loaded is not None:
        if Path(getattr(loaded, "__file__", "") or "").resolve() == path.resolve():
            return  # imported already (a second --import, or a spawned process)
        raise ConfigError(
            f"--import {path}: a module named {name!r} is already imported from elsewhere; rename "
            "the file"
        )
    found = importlib.util.find_spec(name)
    if found is not None and found.origin and Path(found.origin).resolve() == path.resolve():
        with users_code(f"--import {path}", "failed"):  # the file is on the path as it is
            importlib.import_module(name)
        remember_users_module(name)
        return
    if found is not None:
        raise ConfigError(
            f"--import {path}: {name!r} is the name of a module on the path (e.g. a dependency); "
            "rename the file so that it does not shadow it"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"--import {path}: not a Python module")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # so that its classes pickle and its name is recorded in runs
    try:
        with users_code(f"--import {path}", "failed"):
            spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    remember_users_module(mod)
