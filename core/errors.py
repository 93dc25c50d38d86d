"""Error types shared by every layer (a leaf module: it imports nothing of Parley).

Each layer raises what it cannot handle in its own vocabulary and the layer above translates it:

* :class:`UserError`: a problem the user can fix (a missing file, a bad option). The command line prints it as one
  line and exits with :attr:`UserError.exit_code`; the app shows it as a notice.
* :class:`BackendError`: a model failed in a way the user must be told about (bad weights, out of memory...). Each
  profile translates its own errors into it at its boundary (``core.model.freeze_omni.backend``,
  ``core.model.lite.backend``).
"""

from __future__ import annotations


class ParleyError(Exception):
    """Base of Parley's own errors."""


class UserError(ParleyError):
    """A problem the user can fix (missing file, missing system component...). Printed without a traceback."""

    exit_code = 2


class BackendError(ParleyError, RuntimeError):
    """A model failed in a way the user must be told about (bad weights, out of memory...)."""


class ConfigError(UserError, ValueError):
    """Settings that cannot work (an unknown profile, a missing model folder...), found before anything loads."""


def first_line(exc: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error's message (its class name when it has none), at most ``limit``
    characters: what the console shows of a library's error, whatever the library put in it."""
    text = str(exc).strip()
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    if not line:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"
