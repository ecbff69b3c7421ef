"""Shared by the guide and prior validation tests: cases from a registry and a table of bad values."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyro_vae import ConfigError
from pyro_vae.registry import Registry


def bad_option_cases(registry: Registry, bad: dict[str, list]) -> list:
    """One case per (registered name, option it takes, bad value of that option)."""
    return [
        pytest.param(name, option, value, id=f"{name}-{option}={value!r}")
        for name in registry.names()
        for option in registry.parameters(name)
        if option in bad
        for value in bad[option]
    ]


def refused(call: Callable[[], object], option: str) -> None:
    """``call`` raises a one-line ConfigError that names ``option``."""
    with pytest.raises(ConfigError, match=option) as e:
        call()
    assert "\n" not in str(e.value)
