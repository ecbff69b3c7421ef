"""The user's own code: plugins, registered parts, models and data sets passed in.

An exception raised in it is the user's error, not pyro-vae's: it is reported in one line naming the
module or part, the call and the exception (:class:`~pyro_vae.errors.UserCodeError`, exit status 2
on the command line, ``--debug`` for the traceback). This module imports nothing of pyro-vae but
its errors, so that the registries, the plugin loader and the command line can all use it.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import PyroVAEError, UserCodeError

_PACKAGE = Path(__file__).resolve().parent


def _library_dirs() -> tuple[str, ...]:
    import sysconfig

    dirs = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages"))}
    return tuple(str(Path(d).resolve()) + os.sep for d in dirs if d)


def is_users_file(filename: str) -> bool:
    """A source file of the user's: not pyro-vae's, not the standard library's nor an installed
    package's (``<frozen ...>`` and ``<string>`` frames are not the user's either)."""
    if not filename or filename.startswith("<"):
        return False
    path = str(Path(filename).resolve())
    if path.startswith(str(_PACKAGE) + os.sep):
        return False
    return not path.startswith(_library_dirs())


def _location(error: BaseException) -> tuple[str, int, str] | None:
    """(file, line, function) of the innermost frame of ``error``'s traceback outside pyro-vae,
    the standard library and installed packages (for a syntax error, where it is)."""
    if isinstance(error, SyntaxError) and error.filename and is_users_file(error.filename):
        return error.filename, error.lineno or 0, "<module>"
    found = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        if is_users_file(frame.f_code.co_filename):
            found = (frame.f_code.co_filename, line, frame.f_code.co_name)
    return found


#: source files (and package folders) of the user's code that this process imported or was given:
#: plugins (--import, entry points) and the modules of the parts a run uses
_users_sources: set[str] = set()


def remember_users_module(module: Any) -> None:
    """Note ``module`` (a module object or name) as the user's: an exception raised in its code is
    reported as theirs (:func:`blame`)."""
    mod = sys.modules.get(module) if isinstance(module, str) else module
    file = getattr(mod, "__file__", None)
    if not file:
        return
    path = Path(file).resolve()
    _users_sources.add(str(path.parent) + os.sep if path.name == "__init__.py" else str(path))


def _remembered(file: str) -> bool:
    path = str(Path(file).resolve())
    return path in _users_sources or path.startswith(tuple(_users_sources) or ("\0",))


def users_frame(error: BaseException) -> tuple[str, int, str] | None:
    """Where in a module of the user's (:func:`remember_users_module`) ``error`` was raised: the
    innermost such frame, or None."""
    found = None
    for frame, line in traceback.walk_tb(error.__traceback__):
        if _remembered(frame.f_code.co_filename):
            found = (frame.f_code.co_filename, line, frame.f_code.co_name)
    return found


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, where it happened in the user's code, and ``--debug``."""
    if isinstance(error, SystemExit):
        text = f"it called exit({error.code!r})" if error.code is not None else "it called exit()"
    else:
        lines = str(error).strip().splitlines()  # Pyro appends the trace's shapes on more lines
        message = " ".join(lines[0].split())[:300] if lines else ""
        text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    where = _location(error)
    if where is not None:
        text += f" (at {where[0]}:{where[1]}, in {where[2]})"
    return text + "; --debug shows the traceback"


@contextlib.contextmanager
def users_code(what: str, verb: str = "failed") -> Iterator[None]:
    """Run the user's code: an exception from it (``exit()`` included, Ctrl-C not) becomes a
    one-line :class:`UserCodeError` "``what`` ``verb``: Type: message (at file:line)"."""
    try:
        yield
    except UserCodeError:
        raise
    except PyroVAEError as e:  # e.g. a plugin registering a name twice: say whose code it was
        raise UserCodeError(f"{what} {verb}: {e}") from e
    except (Exception, SystemExit) as e:
        raise UserCodeError(f"{what} {verb}: {describe(e)}") from e


def is_users_object(obj: Any) -> bool:
    """A class, function or object defined in the user's code: not in pyro-vae, the standard
    library or an installed package (a class typed in a notebook or ``__main__`` is the user's)."""
    cls = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    module = getattr(cls, "__module__", "") or ""
    if module == "pyro_vae" or module.startswith("pyro_vae."):
        return False
    file = getattr(sys.modules.get(module), "__file__", None)
    if file is None:
        return module == "__main__"
    return is_users_file(file) or _remembered(file)  # an installed plugin lives in site-packages


@contextlib.contextmanager
def parts_boundary(parts: dict[str, str], call: str) -> Iterator[None]:
    """Around a call that runs the user's ``parts`` (:func:`user_parts`): an unexpected exception
    is reported as theirs, naming the part whose module raised it, or, when it surfaced in pyro-vae,
    Pyro or torch (a wrong shape, a NaN parameter), the user's parts the call ran. Without user
    parts nothing changes: an exception then is pyro-vae's own bug."""
    try:
        yield
    except PyroVAEError:
        raise
    except Exception as e:
        if not parts:
            raise
        where = users_frame(e)
        culprits = [
            label
            for label, module in parts.items()
            if where is not None and _file_of(module) == str(Path(where[0]).resolve())
        ] or list(parts)
        names = ", ".join(f"{label} ({parts[label]})" for label in culprits)
        raise UserCodeError(
            f"{call} failed in your code: {names} raised {describe(e)}; check that it returns "
            "what its kind must (shapes, finite values)"
        ) from e


def _file_of(module: str) -> str | None:
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    return str(Path(file).resolve()) if file else None


#: the user's parts of the run this process loaded or trained last (:func:`note_parts`), for the
#: CLI to name when a command fails in them after the run was loaded (sampling, scoring, drawing)
_noted: dict[str, str] = {}


def note_parts(parts: dict[str, str]) -> None:
    _noted.clear()
    _noted.update(parts)


def blame(error: BaseException) -> str | None:
    """The one-line report of an unexpected exception that is the user's: raised in their code,
    or in a run that uses their parts; None when it is pyro-vae's own bug."""
    if isinstance(error, PyroVAEError):
        return None
    if _noted:
        try:
            with parts_boundary(dict(_noted), "the command"):
                raise error
        except UserCodeError as e:
            return str(e)
    if users_frame(error) is not None:
        return f"your code raised {describe(error)}"
    return None
