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


# -- the fuzz corpus's outcomes (tests/test_fuzz.py and the boundary tests) ----------------------------
def one_line_outcome(code: int, err: str) -> None:
    """A command's outcome: success (0), or exit 2 with exactly one ``pyro-vae: error:`` line; never
    an internal error (exit 1) nor a traceback."""
    from hypothesis import event

    event(f"exit {code}")  # --hypothesis-show-statistics tallies the outcomes
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("pyro-vae: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err


def python_outcome(fn: Callable[[], object]) -> None:
    """A Python call's outcome: it returns, or raises a :class:`PyroVAEError` of one line; any other
    exception fails the test."""
    from hypothesis import event

    from pyro_vae import PyroVAEError

    try:
        fn()
        event("python: success")
    except PyroVAEError as e:
        event("python: one-line error")
        assert str(e) and "\n" not in str(e), repr(str(e))
