"""One logging setup for the whole program: console plus a rotating file in the platform log dir.

Library code uses ``logging.getLogger(__name__)`` and never prints; only the CLI prints its results.

The log file is private and bounded: ``parley.log`` in :func:`log_dir` (Linux: ``~/.local/state/parley/log``) is
owner-only (file 0600, a folder Parley created or owns 0700), rotates at 2 MB keeping 5 older files, and at every
start Parley deletes its own log files (``parley.log``, ``parley.log.N``) last written more than
:data:`MAX_AGE_DAYS` days ago. What the user or the assistant said never goes into a log line as text: log calls wrap
it in :func:`speech`, which gives only its length unless the user turned speech logging on
(``PARLEY_LOG_SPEECH=1``, or :func:`set_speech_logging` from a debug setting).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import stat
import time
from pathlib import Path

from platformdirs import user_log_dir

from core.constants import APP_AUTHOR, APP_NAME

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_configured = False

LOG_NAME = "parley.log"
MAX_BYTES = 2_000_000
BACKUPS = 5
MAX_AGE_DAYS = 14
FILE_MODE = 0o600
DIR_MODE = 0o700
SPEECH_ENV = "PARLEY_LOG_SPEECH"
_OWN_LOG = re.compile(rf"{re.escape(LOG_NAME)}(\.\d+)?")
_speech_override: bool | None = None


def log_dir() -> Path:
    """Folder of the rotating log file (``PARLEY_LOG_DIR`` overrides the platform default)."""
    override = os.environ.get("PARLEY_LOG_DIR")
    return Path(override) if override else Path(user_log_dir(APP_NAME, APP_AUTHOR))


# ------------------------------------------------------------------------------------------------ speech in logs


def set_speech_logging(enabled: bool | None) -> None:
    """Turn speech logging on or off for this process (a debug setting); None goes back to ``PARLEY_LOG_SPEECH``."""
    global _speech_override
    _speech_override = enabled


def speech_logging() -> bool:
    """Whether log lines may hold what the user or the assistant said (off unless the user turned it on)."""
    if _speech_override is not None:
        return _speech_override
    return os.environ.get(SPEECH_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def speech(text: object) -> str:
    """What to put in a log line for something the user or the assistant said: its length, or (speech logging on)
    the text itself, quoted."""
    text = "" if text is None else str(text)
    return repr(text) if speech_logging() else f"<{len(text)} chars>"


# ------------------------------------------------------------------------------------------------ the log file


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler whose files are created (and kept) owner-only."""

    def _open(self):  # noqa: ANN202 - logging's own signature
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)    # a file an older version left readable by everyone
        except OSError:
            pass
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)  # noqa: SIM115


def _prepare_dir(folder: Path) -> None:
    """Create the log folder owner-only; tighten the platform default folder (Parley's own) if an older version left
    it open. A folder chosen with PARLEY_LOG_DIR that already exists keeps its mode."""
    existed = folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    if not existed or "PARLEY_LOG_DIR" not in os.environ:
        os.chmod(folder, DIR_MODE)


def remove_old_logs(folder: Path, max_age_days: float = MAX_AGE_DAYS, now: float | None = None) -> list[Path]:
    """Delete Parley's own log files in ``folder`` last written more than ``max_age_days`` ago; tighten the mode
    of the ones kept. Other files are never touched. Returns the deleted files."""
    cutoff = (time.time() if now is None else now) - max_age_days * 86400
    deleted = []
    for path in folder.iterdir():
        if not _OWN_LOG.fullmatch(path.name):
            continue
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_mtime < cutoff:
                path.unlink()
                deleted.append(path)
            elif st.st_mode & 0o777 != FILE_MODE:
                os.chmod(path, FILE_MODE)
        except OSError:
            continue
    return deleted


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
    removed: list[Path] = []
    if file:
        try:
            folder = log_dir()
            _prepare_dir(folder)
            removed = remove_old_logs(folder)
            path = folder / LOG_NAME
            rotating = _PrivateRotatingFileHandler(path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8")
            rotating.setFormatter(formatter)
            rotating.setLevel(logging.DEBUG)
            root.addHandler(rotating)
        except OSError as exc:  # an unwritable log dir must not stop the program
            path = None
            logging.getLogger(__name__).warning("file logging disabled: %s", exc)
    _configured = True
    if removed:
        logging.getLogger(__name__).debug("removed %d log file(s) older than %d days", len(removed), MAX_AGE_DAYS)
    return path
