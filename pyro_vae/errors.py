"""User-facing errors.

Every error a user can trigger with bad input is a :class:`PyroVAEError`: the CLI prints its message on
one line and exits with status 2 instead of showing a traceback from deep inside torch.
"""

from __future__ import annotations


class PyroVAEError(Exception):
    """Base class: the message says what was wrong and what to do about it, on one line."""

    def __init__(self, message: object = "") -> None:
        # Pyro re-raises an error from inside a model or guide as the same class with the trace's
        # shapes appended after a newline; our messages are one line, so keep that line only
        super().__init__(str(message).split("\n", 1)[0])


class ConfigError(PyroVAEError, ValueError):
    """An option or hyperparameter is unknown or out of range."""


class DataError(PyroVAEError, ValueError):
    """The data cannot be loaded, or does not fit the model (range, shape, NaN)."""


class CheckpointError(PyroVAEError):
    """A checkpoint is missing, corrupt, or belongs to a different configuration."""


class TrainingDiverged(PyroVAEError, FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingStopped(PyroVAEError):
    """Another process of a data-parallel run failed, so this one stopped too."""


class UserCodeError(PyroVAEError):
    """Code of the user's own (a plugin, a registered part, a model or data set passed as an object)
    failed; the message names it, the call and the exception, which is the ``__cause__``
    (``--debug`` prints its traceback)."""


class UnsafePath(PyroVAEError):
    """A path inside a run directory is a symbolic link, or leads outside the run directory."""


class WriteFailed(PyroVAEError):
    """A file could not be written (disk full, permission, read-only file system); the file as it
    was before is kept."""


class TooLarge(ConfigError):
    """A size would allocate more memory than this machine has."""
