"""Name -> factory registries shared by the CLI and the Python API.

A new guide, prior, objective, likelihood, network, model or data set is one new module that decorates
its factory with ``@REGISTRY.register("name")``; the CLI lists and finds it through the same registry.

Options reach a factory as keyword arguments. Values typed on the command line arrive as strings
(``--guide-opt centred=False``); :meth:`Registry.options` coerces each one to the type the factory's
signature declares (bool, int, float, str, tuples of those, optional ones), and refuses unknown keys
and values that do not parse, so that no option is kept as a string and silently ignored.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections import abc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _type_hints(factory: Callable[..., Any]) -> dict[str, Any]:
    if inspect.isclass(factory):
        target = factory.__init__  # type: ignore[misc]
    elif inspect.isfunction(factory) or inspect.ismethod(factory):
        target = factory
    else:  # a callable object (a data set source): its __call__ declares the options
        target = type(factory).__call__
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that names something not importable: fall back to defaults
        return {}


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, what: str) -> Any:
    """``value`` as type ``tp`` (from a signature), parsing strings; :class:`ConfigError` if it cannot be.

    Understands ``bool``, ``int``, ``float``, ``str``, ``tuple[X, ...]``, ``X | None`` and ``Any``.
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if type(None) in members and (
            value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        ):
            return None
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return coerce(value, member, what)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{what}: cannot read {value!r}")
    if origin in (tuple, list, abc.Sequence) or tp in (tuple, list):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{what} must be a list of {_describe(item)}, got {value!r}")
        return tuple(coerce(v, item, what) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{what} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{what} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{what} must be a string, got {value!r}")
    return value


class Registry(Generic[T]):
    """A named collection of factories of one kind (``"guide"``, ``"prior"``, ...).

    ``base`` is the class every built object is an instance of, so that an object passed where a name
    goes is checked (:meth:`resolve`). ``supplied`` names the factory arguments the library passes
    itself (a guide's ``feature_dim`` and ``latent_dim`` come from the model); they are not options.
    """

    def __init__(self, kind: str, base: type | None = None, supplied: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.base = base
        self.supplied = frozenset(supplied)
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            return factory

        return decorator

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._factories))

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        if not isinstance(name, str):
            raise ConfigError(f"a {self.kind} name must be a string, got {name!r}")
        if name not in self._factories:
            from .plugins import load_entry_points

            load_entry_points()  # an installed plugin may register it
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())} "
                "(a plugin's names appear once it is imported: --import MODULE)"
            ) from None

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The user-settable options of ``name``: its factory's parameters less the supplied ones."""
        return self.settable(self.get(name))

    def options(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` checked against ``name``'s signature and coerced to the declared types.

        Unknown keys, keys the library supplies itself, and values that do not parse are refused
        with a :class:`ConfigError` that names the option.
        """
        return self.options_of(self.get(name), values, f"{self.kind} {name!r}")

    def settable(self, factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
        """The user-settable options of ``factory``: its parameters less the supplied ones."""
        params = inspect.signature(factory).parameters
        return {
            k: p
            for k, p in params.items()
            if k != "self"
            and k not in self.supplied
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }

    def options_of(
        self, factory: Callable[..., Any], values: Mapping[str, Any], what: str
    ) -> dict[str, Any]:
        """:meth:`options` for a factory that need not be registered (a model class passed as an
        object); ``what`` names it in messages."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{self.kind} options must be KEY=VALUE pairs, got {values!r}")
        params = self.settable(factory)
        hints = _type_hints(factory)
        takes_any = any(
            p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values()
        )
        out = {}
        for key, value in values.items():
            if key in self.supplied:
                raise ConfigError(
                    f"{self.kind} option {key!r} is set by pyro-vae itself, not by an option "
                    f"(e.g. the latent size is --latent-dim)"
                )
            if key not in params:
                if takes_any:
                    out[key] = value
                    continue
                raise ConfigError(
                    f"{what} takes no option {key!r}; it takes {', '.join(params) or 'none'}"
                )
            p = params[key]
            tp = hints.get(key, inspect.Parameter.empty)
            if tp is inspect.Parameter.empty and p.default not in (None, inspect.Parameter.empty):
                tp = type(p.default)
            out[key] = coerce(value, tp, f"{what} option {key}")
        return out

    def resolve(self, spec: str | T, /, **kwargs: Any) -> T:
        """``spec`` itself if it is already an object of this kind, else :meth:`build` ``(spec, ...)``."""
        if isinstance(spec, str):
            return self.build(spec, **kwargs)
        if self.base is not None:
            if inspect.isclass(spec):
                raise ConfigError(
                    f"the {self.kind} {spec.__name__} was passed as a class; pass an instance, "
                    f"{spec.__name__}(...), or a registered name ({', '.join(self.names())})"
                )
            if not isinstance(spec, self.base):
                raise ConfigError(
                    f"a {self.kind} must be a registered name ({', '.join(self.names())}) or a "
                    f"{self.base.__module__}.{self.base.__qualname__} instance, "
                    f"got {type(spec).__name__}"
                )
        return spec

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Call the factory ``name`` with the supplied arguments and the (coerced) options."""
        factory = self.get(name)
        supplied = {k: v for k, v in kwargs.items() if k in self.supplied}
        options = self.options(name, {k: v for k, v in kwargs.items() if k not in self.supplied})
        try:
            return factory(**supplied, **options)
        except TypeError as e:
            raise ConfigError(f"bad options for {self.kind} {name!r}: {e}") from None
