"""Parts that describe themselves: the class and constructor arguments an object was built with.

Every built-in part (models, guides, priors, likelihoods, networks, objectives) derives from
:class:`Described`, whose ``__init_subclass__`` hook records the arguments each object's constructor
was called with (defaults filled in). :func:`describe` turns an object into JSON-ready data,
recursively (a guide passed as an object inside a model is described as a part of its own), and
:func:`rebuild` calls the same constructors again::

    vae = pv.VAE((1, 28, 28), latent_dim=7, guide="iaf", prior="vamp")
    spec = pv.describe(vae)  # {"class": "pyro_vae.models.vae:VAE", "args": {"latent_dim": 7, ...}}
    same = pv.rebuild(spec)  # a fresh VAE of the same architecture (new weights)

A user's class that subclasses a part (``pyro_vae.Model``, ``AmortizedGuide``, ...) records its
arguments the same way; it is described by its import path, so it can be rebuilt in another process
when its module is importable there. A class defined in a script (``__main__``) or inside a function
cannot be, and :func:`describe` says so.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

_ARGS = "_pv_arguments"
_LEVELS = "_pv_levels"


class NotDescribable(ConfigError):
    """An object (or one of its arguments) cannot be written down so that it can be rebuilt."""


class Described:
    """Mixin of every part: each object records the arguments its constructor was called with.

    The hook wraps the ``__init__`` of each subclass that defines one; the outermost call (the
    object's own class) records what the object is rebuilt from, and each ``super().__init__`` call
    what its class was given (:func:`arguments` with ``level``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None and Described in cls.__bases__:
            init = cls.__init__  # a class that mixes this in over an inherited constructor
        if init is None or getattr(init, "_pv_records", False):
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kw: Any) -> None:
            levels = self.__dict__.get(_LEVELS)
            if levels is None:
                levels = {}
                object.__setattr__(self, _LEVELS, levels)
            if cls not in levels:
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError:
                    bound = None  # the constructor itself raises the error about its arguments
                if bound is not None:
                    recorded = _arguments(bound)
                    levels[cls] = recorded[1]
                    if _ARGS not in self.__dict__:  # the object's own class: the outermost call
                        object.__setattr__(self, _ARGS, recorded)
            init(self, *args, **kw)

        __init__._pv_records = True  # type: ignore[attr-defined]
        cls.__init__ = __init__  # type: ignore[misc]


def _arguments(bound: inspect.BoundArguments) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(positional, keyword) arguments of a call, defaults included, ``self`` left out."""
    bound.apply_defaults()
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for i, (name, value) in enumerate(bound.arguments.items()):
        p = bound.signature.parameters[name]
        if i == 0:
            continue  # self
        if p.kind is p.POSITIONAL_ONLY:
            args.append(value)
        elif p.kind is p.VAR_POSITIONAL:
            args.extend(value)
        elif p.kind is p.VAR_KEYWORD:
            kwargs.update(value)
        else:
            kwargs[name] = value
    return tuple(args), kwargs


def arguments(obj: Any, level: type | None = None) -> dict[str, Any] | None:
    """The keyword arguments ``obj`` was built with (defaults included), or None if it did not
    record them; with ``level``, those that the ``__init__`` of its base class ``level`` was called
    with (by ``super().__init__``)."""
    if level is not None:
        found = getattr(obj, "__dict__", {}).get(_LEVELS, {}).get(level)
        return None if found is None else dict(found)
    recorded = getattr(obj, "__dict__", {}).get(_ARGS)
    return None if recorded is None else dict(recorded[1])


def import_path(cls: type) -> str:
    """``"module:QualName"`` of a class that another process can import; else
    :class:`NotDescribable` saying why not."""
    module, qualname = cls.__module__, cls.__qualname__
    what = f"the class {qualname}"
    if module == "__main__":
        raise NotDescribable(
            f"{what} is defined in the script being run (__main__), which another process cannot "
            "import; move it into a module on the import path"
        )
    if "<locals>" in qualname:
        raise NotDescribable(
            f"{what} is defined inside a function ({module}.{qualname}), which cannot be imported; "
            "define it at the top level of a module"
        )
    if _resolve(module, qualname) is not cls:
        raise NotDescribable(
            f"{what} is not what {module}.{qualname} imports as; define it at the top level of "
            "its module"
        )
    return f"{module}:{qualname}"


def _resolve(module: str, qualname: str) -> Any:
    try:
        obj: Any = importlib.import_module(module)
        for attr in qualname.split("."):
            obj = getattr(obj, attr)
    except (ImportError, AttributeError):
        return None
    return obj


def describe(obj: Any) -> dict[str, Any]:
    """``obj`` as JSON-ready data: ``{"class": "module:QualName", "args": {...}}``.

    Arguments that are parts themselves are described the same way (recursively); tuples are
    written as lists. :class:`NotDescribable` names the argument that cannot be written down (a
    tensor, a function, a module that does not record its arguments) or a class that cannot be
    imported by another process.
    """
    return _describe_part(obj, type(obj).__name__)


def _describe_part(obj: Any, where: str) -> dict[str, Any]:
    recorded = getattr(obj, "__dict__", {}).get(_ARGS)
    cls = type(obj)
    if recorded is None:
        raise NotDescribable(
            f"{where} is a {cls.__module__}.{cls.__qualname__}, which does not record the "
            "arguments it was built with (pyro_vae's parts and their subclasses do, e.g. a "
            "subclass of pyro_vae.Model)"
        )
    try:
        path = import_path(cls)
    except NotDescribable as e:
        raise NotDescribable(f"{where}: {e}") from None
    args, kwargs = recorded
    out: dict[str, Any] = {"class": path}
    if args:
        out["positional"] = [_value(v, f"{where}[{i}]") for i, v in enumerate(args)]
    out["args"] = {k: _value(v, f"{where}.{k}") for k, v in kwargs.items()}
    return out


def json_value(value: Any) -> Any:
    """``value`` as JSON data where it can be written down (a part as its description), else a
    placeholder naming its type."""
    try:
        return _value(value, "")
    except NotDescribable:
        return f"<{type(value).__qualname__}>"


def _value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, numbers.Integral):  # a NumPy integer
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotDescribable(f"{where} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, (tuple, list)):
        return [_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if "class" in value or not all(isinstance(k, str) for k in value):
            raise NotDescribable(
                f"{where} is a mapping with the key 'class' or keys that are not strings"
            )
        return {k: _value(v, f"{where}.{k}") for k, v in value.items()}
    if getattr(value, "__dict__", {}).get(_ARGS) is not None or hasattr(value, "forward"):
        return _describe_part(value, where)
    raise NotDescribable(
        f"{where} is a {type(value).__name__}, which cannot be written down as JSON; pass it "
        "as a name, a number or a part"
    )


def rebuild(description: Mapping[str, Any]) -> Any:
    """A fresh object of the class and arguments :func:`describe` wrote down (new weights).

    Only classes that describe themselves (subclasses of :class:`Described`) are built; the module
    that defines one is imported, as Python's own ``import`` would.
    """
    return _build_part(description, "the description")


def _build_part(d: Mapping[str, Any], where: str) -> Any:
    if not isinstance(d, Mapping) or not isinstance(d.get("class"), str):
        raise ConfigError(f"{where} must be an object with a 'class' entry, got {d!r}")
    path = d["class"]
    module, _, qualname = path.partition(":")
    cls = _resolve(module, qualname) if qualname else None
    if cls is None:
        raise NotDescribable(
            f"{where} names the class {path}, which cannot be imported here; make its module "
            "importable (install it or put it on PYTHONPATH)"
        )
    if not (inspect.isclass(cls) and issubclass(cls, Described)):
        raise ConfigError(
            f"{where} names {path}, which is not a pyro_vae part (a subclass of "
            "pyro_vae.describe.Described); refusing to call it"
        )
    args = [_build_value(v, f"{path}[{i}]") for i, v in enumerate(d.get("positional", []))]
    kwargs = {k: _build_value(v, f"{path}.{k}") for k, v in dict(d.get("args", {})).items()}
    return cls(*args, **kwargs)


def _build_value(value: Any, where: str) -> Any:
    if isinstance(value, list):
        return tuple(_build_value(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Mapping):
        if "class" in value:
            return _build_part(value, where)
        return {k: _build_value(v, f"{where}.{k}") for k, v in value.items()}
    return value
