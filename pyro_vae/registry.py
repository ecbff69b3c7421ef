"""Name -> factory registries shared by the CLI and the Python API.

A new guide, prior, objective, likelihood, network or model is one new module that decorates its
factory with ``@REGISTRY.register("name")``; the CLI lists and finds it through the same registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories of one kind (``"guide"``, ``"prior"``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
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
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}: choose one of {', '.join(self.names())}"
            ) from None

    def resolve(self, spec: str | T, /, **kwargs: Any) -> T:
        """``spec`` itself if it is already an object, else :meth:`build` ``(spec, **kwargs)``."""
        return self.build(spec, **kwargs) if isinstance(spec, str) else spec

    def build(self, name: str, /, **kwargs: Any) -> T:
        """Call the factory ``name`` with ``kwargs``, rejecting options it does not take."""
        factory = self.get(name)
        params = inspect.signature(factory).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(kwargs) - set(params))
            if unknown:
                raise ConfigError(
                    f"{self.kind} {name!r} takes no option {', '.join(map(repr, unknown))}; "
                    f"it takes {', '.join(p for p in params if p != 'self') or 'none'}"
                )
        try:
            return factory(**kwargs)
        except TypeError as e:
            raise ConfigError(f"bad options for {self.kind} {name!r}: {e}") from None
