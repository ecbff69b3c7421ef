"""Progress that fits where it goes: a bar on a terminal, a few plain lines elsewhere (a pipe, a
file, CI, a batch system), nothing when asked for quiet.

A terminal redraws a bar in place; a file keeps every redraw, so a bar piped to a log becomes
hundreds of updates on one line. Elsewhere, training writes one line per epoch (:func:`epoch_line`)
and a long evaluation a line every tenth of the way (:func:`track`).

The mode is ``"auto"`` (decided from the streams), ``"bar"``, ``"lines"`` or ``"off"``; the
command line sets it for a whole command with :func:`reporting`, and the evaluation loops read it
from there, so that library calls stay silent unless asked.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
MODES = ("auto", "bar", "lines", "off")
_mode: ContextVar[str] = ContextVar("pyro_vae_progress", default="off")
#: a line mode prints at most this often (seconds), except the last line of a task
_MIN_INTERVAL = 1.0


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel: tqdm.auto draws a widget there; stderr is no
    terminal, yet a bar is what fits. (A process that merely imported ipykernel, e.g. to run
    notebooks, is not one.)"""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def check_mode(mode: bool | str) -> str:
    """``True`` -> ``"auto"``, ``False`` -> ``"off"``; a string must be one of :data:`MODES`."""
    if mode is True:
        return "auto"
    if mode is False or mode is None:
        return "off"
    if mode not in MODES:
        from .errors import ConfigError

        raise ConfigError(
            f"progress must be True, False or one of {', '.join(MODES)}; got {mode!r}"
        )
    return mode


def outputs(mode: bool | str) -> tuple[bool, bool]:
    """(bar on stderr, lines on stdout) for a training run in ``mode``. ``"auto"``: the bar where
    stderr is a terminal, the lines where stdout is not one (``pyro-vae train > log`` in a
    terminal shows the bar and logs the lines) or no bar is shown."""
    mode = check_mode(mode)
    if mode == "auto":
        bar = _isatty(sys.stderr) or _in_notebook()
        return bar, not bar or not _isatty(sys.stdout)
    return mode == "bar", mode == "lines"


def epoch_line(
    epoch: int, epochs: int, train_elbo: float, test_elbo: float, seconds: float, images: int
) -> str:
    """The line a run writes per epoch where no bar fits."""
    rate = images / seconds if seconds > 0 else float("inf")
    return (
        f"epoch {epoch}/{epochs}  train ELBO {train_elbo:.3f}  test ELBO {test_elbo:.3f}  "
        f"{seconds:.2f} s  {rate:.0f} images/s"
    )


@contextlib.contextmanager
def reporting(mode: bool | str) -> Iterator[str]:
    """Evaluations inside report progress in ``mode`` (``"auto"``: a bar where stderr is a
    terminal, else lines on stderr)."""
    mode = check_mode(mode)
    if mode == "auto":
        mode = "bar" if _isatty(sys.stderr) or _in_notebook() else "lines"
    token = _mode.set(mode)
    try:
        yield mode
    finally:
        _mode.reset(token)


def current() -> str:
    """The mode set by the innermost :func:`reporting` (``"off"`` outside any)."""
    return _mode.get()


def track(
    iterable: Iterable[T],
    *,
    total: int,
    desc: str,
    mode: str | None = None,
    unit: str = "batches",
) -> Iterator[T]:
    """``iterable``, reporting progress in ``mode`` (default: :func:`current`): a tqdm bar on
    stderr, or on stderr a line at each tenth of the way at most once a second, and a last line
    when the task took that long. ``unit`` names what is counted (plural)."""
    mode = current() if mode is None else mode
    if mode == "off" or total <= 0:
        yield from iterable
        return
    if mode == "bar":
        from tqdm.auto import tqdm

        yield from tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit.removesuffix("es") if unit.endswith("ches") else unit.removesuffix("s"),
            leave=False,
            dynamic_ncols=True,
        )
        return
    start = last = time.perf_counter()
    printed = False
    step = 0
    for step, item in enumerate(iterable, 1):
        yield item
        now = time.perf_counter()
        tenth = step * 10 // total > (step - 1) * 10 // total
        if step < total and tenth and now - last >= _MIN_INTERVAL:
            print(f"{desc}: {step}/{total} {unit}, {now - start:.1f} s", file=sys.stderr)
            last, printed = now, True
    elapsed = time.perf_counter() - start
    if printed or elapsed >= _MIN_INTERVAL:
        print(f"{desc}: done, {step}/{total} {unit} in {elapsed:.1f} s", file=sys.stderr)
