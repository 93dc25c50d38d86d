"""Where sessions live, and listing, sizing and retention of session folders.

Root folder, first match wins: an explicit folder (the one chosen in settings), ``$PARLEY_DATA_DIR/sessions``,
``platformdirs.user_data_dir("parley")/sessions``. Folders Parley creates are owner-only (0700), files 0600; a
folder Parley did not create keeps its mode.

Deleting is guarded, because a recording folder may be a user's own folder (``~/Documents``) full of other things.
Retention (and ``parley session prune``) deletes a folder only when :func:`deletion_refusal` finds nothing against
it: a real folder directly inside the sessions root (no link), whose ``meta.json`` says ``"format":
"parley-session"`` and ``"created_folder": true`` (the recorder writes that only into a folder it created itself),
and which holds nothing but the regular files Parley writes. Sessions recorded before the ``created_folder`` marker
existed are kept, and prune says so; the session browser may still delete them on the user's request
(:func:`delete_session`), but never a folder holding files Parley did not write.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from platformdirs import user_data_dir

from core.constants import APP_AUTHOR, APP_NAME

from core.fsutil import atomic_write_text  # noqa: F401  (re-exported for the session modules)

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
META_NAME = "meta.json"
REPORT_JSON = "report.json"   # a replay's comparison report (core.session.compare)
REPORT_MD = "report.md"
EVENTS_NAME = "events.jsonl"
TRANSCRIPT_NAME = "transcript.md"
STREAM_FILES = {
    "mic_raw": "mic_raw.wav",
    "mic_clean": "mic_clean.wav",
    "playback": "playback.wav",
    "assistant": "assistant.wav",
}
META_FORMAT = "parley-session"
CREATED_MARK = "created_folder"       # meta.json key: true when the recorder created the folder itself
MAX_RETENTION_DAYS = 3650


def data_dir() -> Path:
    override = os.environ.get("PARLEY_DATA_DIR")
    return Path(override) if override else Path(user_data_dir(APP_NAME, APP_AUTHOR))


def sessions_root(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding one sub-folder per session (not created here)."""
    if folder:
        return Path(folder).expanduser()
    return data_dir() / "sessions"


def make_private_dir(path: Path) -> bool:
    """Make sure ``path`` is a folder. One that Parley creates (with missing parents) is owner-only; an existing one
    keeps its mode. Returns True when the folder was created here; raises OSError when impossible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(f"{path} exists and is not a folder") from None
        return False
    os.chmod(path, DIR_MODE)
    return True


def new_session_dir(root: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Create a fresh, owner-only session folder named after the local start time (unique suffix on collision)."""
    base = sessions_root(root)
    make_private_dir(base)
    stem = name or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for i in range(1000):
        candidate = base / (stem if i == 0 else f"{stem}_{i}")
        try:
            candidate.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(candidate, DIR_MODE)
        return candidate
    raise FileExistsError(f"no free session folder name for {stem!r} in {base}")


def is_session_dir(path: Path) -> bool:
    return path.is_dir() and ((path / META_NAME).exists() or (path / EVENTS_NAME).exists())


def _parley_file(name: str) -> bool:
    """A name Parley writes into a session folder (its temporary files included)."""
    known = {META_NAME, EVENTS_NAME, TRANSCRIPT_NAME, REPORT_JSON, REPORT_MD, *STREAM_FILES.values()}
    return name in known or (name.startswith(".") and name.endswith(".tmp"))


def foreign_entries(path: Path) -> list[str]:
    """Names in a session folder that Parley did not write there: other names, sub-folders, links, devices."""
    foreign = []
    with os.scandir(path) as entries:
        for entry in entries:
            if not (_parley_file(entry.name) and entry.is_file(follow_symlinks=False)):
                foreign.append(entry.name)
    return sorted(foreign)


def is_parley_session(path: Path) -> bool:
    """The folder's own meta.json (a regular file, not a link) names Parley's session format."""
    meta_path = Path(path) / META_NAME
    return meta_path.is_file() and not meta_path.is_symlink() and read_meta(path).get("format") == META_FORMAT


def deletion_refusal(path: Path, require_mark: bool = True) -> str | None:
    """Why ``path`` must not be deleted (one line), or None when it is a session folder Parley may delete.

    ``require_mark``: also demand the ``created_folder`` marker (automatic deletion); the session browser deletes on
    the user's word and does not need it.
    """
    try:
        st = path.lstat()
    except OSError as exc:
        return f"cannot be examined ({exc.strerror or exc})"
    if stat.S_ISLNK(st.st_mode):
        return "is a link (only folders inside the sessions folder are deleted)"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if not is_parley_session(path):
        return "is not a Parley session (no meta.json with the parley-session format)"
    meta = read_meta(path)
    try:
        foreign = foreign_entries(path)
    except OSError as exc:
        return f"cannot be listed ({exc.strerror or exc})"
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        return f"holds files Parley did not write ({shown})"
    if require_mark and meta.get(CREATED_MARK) is not True:
        return "was recorded before Parley marked the folders it creates, so it is never deleted automatically"
    return None


@dataclass
class SessionInfo:
    """One session folder as the session browser shows it."""

    path: Path
    name: str
    start_time: datetime | None    # local wall-clock start (from meta.json; folder mtime if unknown)
    duration_s: float | None       # from meta.json (mic samples / rate), None if unknown
    size_bytes: int
    profile: str | None
    complete: bool                 # the recorder closed it cleanly
    last_modified: float           # newest file mtime (epoch seconds)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "name": self.name,
            "start_time": self.start_time.isoformat() if self.start_time else None,
            "duration_s": self.duration_s, "size_bytes": self.size_bytes, "profile": self.profile,
            "complete": self.complete,
        }


def read_meta(path: Path) -> dict:
    """meta.json of a session folder, or {} when it is missing or unreadable."""
    try:
        with open(Path(path) / META_NAME, encoding="utf-8") as f:
            meta = json.load(f)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError, RecursionError):
        return {}


def folder_size(path: Path) -> tuple[int, float]:
    """(total bytes, newest mtime) of the files under ``path``."""
    total, newest = 0, 0.0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
    if newest == 0.0:
        try:
            newest = path.stat().st_mtime
        except OSError:
            pass
    return total, newest


def session_info(path: str | os.PathLike) -> SessionInfo:
    path = Path(path)
    meta = read_meta(path)
    size, newest = folder_size(path)
    start: datetime | None = None
    if isinstance(meta.get("start_time"), str):
        try:
            start = datetime.fromisoformat(meta["start_time"])
        except ValueError:
            start = None
    if start is None:
        try:
            start = datetime.fromtimestamp(path.stat().st_mtime)
        except OSError:
            start = None
    duration = meta.get("duration_s")
    return SessionInfo(
        path=path, name=path.name, start_time=start,
        duration_s=float(duration) if isinstance(duration, (int, float)) else None,
        size_bytes=size, profile=meta.get("profile"), complete=bool(meta.get("complete")), last_modified=newest,
    )


def list_sessions(root: str | os.PathLike | None = None) -> list[SessionInfo]:
    """Every session under the root, newest first."""
    base = sessions_root(root)
    if not base.is_dir():
        return []
    infos = [session_info(p) for p in base.iterdir() if is_session_dir(p)]
    infos.sort(key=lambda s: (s.start_time.timestamp() if s.start_time else 0.0, s.name), reverse=True)
    return infos


def delete_session(path: str | os.PathLike) -> None:
    """Delete a session folder on the user's request (the session browser). Raises ValueError for a folder that is
    not a Parley session or that holds anything Parley did not write."""
    path = Path(path)
    refusal = deletion_refusal(path, require_mark=False)
    if refusal:
        raise ValueError(f"{path} {refusal}; not deleted")
    shutil.rmtree(path)


def check_retention_days(days: float) -> float:
    """``days`` as a float when it is a usable retention period (0 = keep everything); ValueError otherwise."""
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) \
            or not 0 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"retention must be a number of days from 0 to {MAX_RETENTION_DAYS} (got {days!r})")
    return float(days)


@dataclass
class RetentionResult:
    deleted: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)   # old folders kept, with the reason
    failed: list[tuple[Path, str]] = field(default_factory=list)    # deletions the file system refused


def apply_retention(days: float | None, root: str | os.PathLike | None = None, now: float | None = None,
                    keep: set[Path] | None = None) -> RetentionResult:
    """Delete the sessions under ``root`` whose last activity (newest file) is older than ``days``, as far as
    :func:`deletion_refusal` allows; None or 0 keeps everything. ``keep`` protects folders (the session being
    recorded). Raises ValueError for a ``days`` that is not a number from 0 to 3650.
    """
    if days is None:
        return RetentionResult()
    days = check_retention_days(days)
    result = RetentionResult()
    if days == 0:
        return result
    now = time.time() if now is None else now
    cutoff = now - days * 86400.0
    keep = {Path(p).resolve() for p in (keep or set())}
    for info in list_sessions(root):
        if info.path.resolve() in keep or info.last_modified >= cutoff or not is_parley_session(info.path):
            continue  # other folders in a user-chosen recording folder are none of retention's business
        refusal = deletion_refusal(info.path)
        if refusal:
            result.skipped.append((info.path, refusal))
            continue
        try:
            shutil.rmtree(info.path)
            result.deleted.append(info.path)
            log.info("retention: deleted session %s (older than %g days)", info.path, days)
        except OSError as exc:
            result.failed.append((info.path, exc.strerror or str(exc)))
            log.warning("retention: could not delete %s: %s", info.path, exc)
    return result
