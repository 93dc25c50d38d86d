"""One logging setup for the whole program: console plus a rotating file in the platform log dir.

Library code uses ``logging.getLogger(__name__)`` and never prints; only the CLI prints its results.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

from platformdirs import user_log_dir

from core.constants import APP_AUTHOR, APP_NAME

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_configured = False


def log_dir() -> Path:
    """Folder of the rotating log file (``PARLEY_LOG_DIR`` overrides the platform default)."""
    override = os.environ.get("PARLEY_LOG_DIR")
    return Path(override) if override else Path(user_log_dir(APP_NAME, APP_AUTHOR))


def setup_logging(level: int | str = "INFO", console: bool = True, file: bool = True) -> Path | None:
    """Configure the root logger once. Returns the log file path (None when file logging is off or impossible)."""
    global _configured
    root = logging.getLogger()
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    # The root passes everything; each handler filters (console at `level`, the file keeps DEBUG detail).
    root.setLevel(logging.DEBUG if file else level)
    path: Path | None = None
    if _configured:
        for handler in root.handlers:
            if isinstance(handler, logging.handlers.RotatingFileHandler):
                path = Path(handler.baseFilename)
        return path
    formatter = logging.Formatter(_FORMAT)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(formatter)
        stream.setLevel(level)
        root.addHandler(stream)
    if file:
        try:
            folder = log_dir()
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "parley.log"
            rotating = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=5, encoding="utf-8")
            rotating.setFormatter(formatter)
            rotating.setLevel(logging.DEBUG)
            root.addHandler(rotating)
        except OSError as exc:  # an unwritable log dir must not stop the program
            path = None
            logging.getLogger(__name__).warning("file logging disabled: %s", exc)
    _configured = True
    return path
