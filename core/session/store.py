"""Where sessions live, and listing, sizing and retention of session folders.

Root folder, first match wins: an explicit folder (the one chosen in settings), ``$PARLEY_DATA_DIR/sessions``,
``platformdirs.user_data_dir("parley")/sessions``. Folders are created owner-only (0700), files 0600.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from platformdirs import user_data_dir

from core.constants import APP_AUTHOR, APP_NAME

from core.fsutil import atomic_write_text  # noqa: F401  (re-exported for the session modules)

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
META_NAME = "meta.json"
EVENTS_NAME = "events.jsonl"
TRANSCRIPT_NAME = "transcript.md"
STREAM_FILES = {
    "mic_raw": "mic_raw.wav",
    "mic_clean": "mic_clean.wav",
    "playback": "playback.wav",
    "assistant": "assistant.wav",
}


def data_dir() -> Path:
    override = os.environ.get("PARLEY_DATA_DIR")
    return Path(override) if override else Path(user_data_dir(APP_NAME, APP_AUTHOR))


def sessions_root(folder: str | os.PathLike | None = None) -> Path:
    """The folder holding one sub-folder per session (not created here)."""
    if folder:
        return Path(folder).expanduser()
    return data_dir() / "sessions"


def make_private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) and make the leaf owner-only; raises OSError when impossible."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


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
    except (OSError, ValueError):
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
    path = Path(path)
    if not is_session_dir(path):
        raise ValueError(f"{path} is not a session folder")
    shutil.rmtree(path)


def apply_retention(days: float | None, root: str | os.PathLike | None = None, now: float | None = None,
                    keep: set[Path] | None = None) -> list[Path]:
    """Delete sessions whose last activity (newest file) is older than ``days``; None or <= 0 keeps everything.

    ``keep`` protects folders (the session being recorded). Returns the deleted folders.
    """
    if days is None or days <= 0:
        return []
    now = time.time() if now is None else now
    cutoff = now - days * 86400.0
    keep = {Path(p).resolve() for p in (keep or set())}
    deleted: list[Path] = []
    for info in list_sessions(root):
        if info.path.resolve() in keep or info.last_modified >= cutoff:
            continue
        try:
            shutil.rmtree(info.path)
            deleted.append(info.path)
            log.info("retention: deleted session %s (older than %g days)", info.path, days)
        except OSError as exc:
            log.warning("retention: could not delete %s: %s", info.path, exc)
    return deleted
