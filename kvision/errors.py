"""What counts as a user error, and the exception types kvision raises for them.

A **user error** is a problem the user can fix without changing kvision: a config key or value,
an argument or option, a data file or folder, a model file, a path that does not exist, or an
environment that cannot train safely. kvision raises these as subclasses of :class:`UserError`
(which also subclass the builtin type a caller would expect, so ``except ValueError`` keeps
working), and the ``kvision`` command prints them as one line ``kvision CMD: error: ...`` with
exit status 2.

Every other exception is a bug in kvision (or in a library under it): the command prints
``kvision CMD: internal error (a bug in kvision, please report it)`` with the traceback and exits
with status 1.

Besides :class:`UserError`, these are user errors (see :func:`is_user_error`):

- ``kvision.config.ConfigError`` (config keys, values, files) and
  ``kvision.data.idx.DatasetError`` (dataset files), ``kvision.preprocess.ImageError``
  (unreadable images), which predate this module;
- ``FileNotFoundError``, ``FileExistsError``, ``NotADirectoryError``, ``IsADirectoryError`` and
  ``PermissionError``: kvision opens only the paths it is given or writes itself, so these name a
  user path;
- a TensorFlow error that carries a bad image file's message (``data.on_error=raise`` inside
  ``tf.data``).

Example:
    >>> raise InputValueError("`top_k` should be >= 1. Received: top_k=0")
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """Base class of the errors the user can fix (input, files, environment). The message says
    what was received and what is allowed."""


class InputValueError(UserError, ValueError):
    """A value given by the user (argument, option, config field, CLI flag) is not allowed."""


class InputTypeError(UserError, TypeError):
    """A value given by the user has the wrong type (for example a Keras 3 model)."""


class ModelFileError(UserError, ValueError):
    """A model file cannot be loaded as a tf_keras model (Keras 3 file, missing custom code,
    not a model). The message names the file and what to do."""


class MissingDependencyError(UserError, ImportError):
    """An optional package is not installed; the message says what to install."""


class UnsafeTrainingError(UserError, RuntimeError):
    """Training this model in this process would corrupt memory (see ``kvision._env``).

    ``layers`` names the offending layers (``"name (Conv2D 1x1, stride 2, 62x62 map)"``).
    """

    def __init__(self, message: str, layers=()):
        super().__init__(message)
        self.layers = list(layers)

    def layers_text(self) -> str:
        """The offending layers in a few words, for one line of output."""
        shown = ", ".join(self.layers[:3]) + (" ..." if len(self.layers) > 3 else "")
        return f"the model has 1x1 strided convolution(s) {shown}"


_PATH_ERRORS = (
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)
# Older user-error types defined next to the code that raises them: (module, class name).
# Looked up in sys.modules only: an exception of a module never imported cannot be raised.
_LEGACY = (
    ("kvision.config", "ConfigError"),
    ("kvision.data.idx", "DatasetError"),
    ("kvision.preprocess", "ImageError"),
)


def user_error_types() -> tuple[type, ...]:
    """The exception classes that count as user errors in this process."""
    types = [UserError, *_PATH_ERRORS]
    for module, name in _LEGACY:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type):
            types.append(cls)
    return tuple(types)


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` is a user error (see the module docstring), else it is a bug."""
    if isinstance(exc, user_error_types()):
        return True
    # data.on_error=raise: the DatasetError raised while decoding in tf.data reaches Python as a
    # TensorFlow error whose message carries the bad file.
    return type(exc).__module__.startswith("tensorflow") and "Bad image file" in str(exc)


def user_error_status(command: str, exc: BaseException) -> int:
    """For a command's ``except`` block: print a user error as one line ``kvision COMMAND:
    error: ...`` and return exit status 2; re-raise anything else (a bug keeps its traceback)."""
    if not is_user_error(exc):
        raise exc
    print(f"kvision {command}: error: {exc}", file=sys.stderr)
    return 2
