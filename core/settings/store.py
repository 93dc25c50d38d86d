"""Reading and writing the one settings file (JSON) under the platform config dir.

* ``PARLEY_CONFIG_DIR`` overrides the folder (tests, portable installs).
* A file that cannot be parsed (not UTF-8, not JSON, nested too deep) is renamed ``settings.json.broken-<time>``
  and defaults are used; a file that parses but has bad or unknown values is copied aside the same way (once: an
  identical copy is not made again) before anything is written over it, so a user's hand edits are never silently
  lost. A UTF-8 byte order mark is fine. ``load_settings(keep_aside=False)`` (doctor, the session commands, the
  self-test) only reads and reports.
* A file that exists but cannot be read (permissions, e.g. root-owned after ``sudo parley``; a folder or a fifo in
  its place) gives defaults with a warning, and :func:`save_settings` refuses to replace it
  (:class:`SettingsNotSaved`, an OSError) until the user has fixed it and restarted Parley.
* Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``. A settings file that is a
  link (dotfiles) is written where the link points, and stays a link.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_config_dir, user_data_dir

from core.constants import APP_AUTHOR, APP_NAME
from core.settings.schema import Settings

from core.fsutil import atomic_write_text

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"


def config_dir() -> Path:
    override = os.environ.get("PARLEY_CONFIG_DIR")
    return Path(override) if override else Path(user_config_dir(APP_NAME, APP_AUTHOR))


def data_dir() -> Path:
    override = os.environ.get("PARLEY_DATA_DIR")
    return Path(override) if override else Path(user_data_dir(APP_NAME, APP_AUTHOR))


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def default_recording_dir() -> Path:
    return data_dir() / "sessions"


def default_models_dir() -> Path:
    return data_dir() / "models"


MAX_SETTINGS_BYTES = 16 * 1024 * 1024   # far above any real settings file; a bigger one is treated as broken

# Settings files this process could not read: never replaced, even if they became readable since (the settings in
# memory are then defaults, not the user's).
_unreadable: set[Path] = set()


class SettingsNotSaved(OSError):
    """The settings were not written, because that would replace a file Parley could not read."""


@dataclass
class LoadResult:
    settings: Settings
    warnings: list[str] = field(default_factory=list)
    kept_aside: Path | None = None   # where a broken/partly invalid file was moved or copied
    existed: bool = False            # False on first run
    unreadable: bool = False         # the file exists but could not be read: it is never saved over
    broken: bool = False             # the file could not be parsed: defaults (the file is moved aside once)


def _aside_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.broken-{stamp}-{n}")
        n += 1
    return candidate


def _identical_aside(path: Path, raw: bytes) -> Path | None:
    """An earlier ``settings.json.broken-*`` copy with exactly these bytes, if there is one."""
    for other in sorted(path.parent.glob(f"{path.name}.broken-*")):
        try:
            if other.stat().st_size == len(raw) and other.read_bytes() == raw:
                return other
        except OSError:
            continue
    return None


def _read_problem(path: Path) -> tuple[bytes | None, str | None]:
    """(content, None), or (None, why it cannot be read), or (None, None) when there is no file at all."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            return None, f"is a link to {os.readlink(path)}, which does not exist"
        return None, None
    except OSError as exc:
        return None, f"cannot be examined ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return None, "is not a regular file"
    try:
        with open(path, "rb") as f:
            return f.read(MAX_SETTINGS_BYTES + 1), None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"


def _parse(raw: bytes) -> object:
    if len(raw) > MAX_SETTINGS_BYTES:
        raise ValueError(f"larger than {MAX_SETTINGS_BYTES // (1024 * 1024)} MB")
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def load_settings(path: Path | None = None, keep_aside: bool = True) -> LoadResult:
    """Read the settings file. Never raises for a bad file: falls back to defaults and says why in one line.

    ``keep_aside``: move a broken file aside (copy a partly invalid one) so that saving cannot lose it; False only
    reads and reports (for commands that never save).
    """
    path = path or settings_path()
    raw, problem = _read_problem(path)
    if problem:
        _unreadable.add(path)
        msg = (f"the settings file {path} {problem}; started with defaults, and Parley will not save settings over "
               "it: make it readable for your user (e.g. sudo chown $USER on it) or move it away, then restart Parley")
        log.warning(msg)
        return LoadResult(Settings(), [msg], existed=True, unreadable=True)
    if raw is None:
        log.info("no settings file at %s: first run, using defaults", path)
        return LoadResult(Settings(), existed=False)
    try:
        data = _parse(raw)
        settings, warnings = Settings.from_dict(data)
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        return _broken(path, reason, keep_aside)
    kept: Path | None = None
    if warnings:
        for w in warnings:
            log.warning("settings: %s", w)
        kept = _identical_aside(path, raw)
        if kept is None and keep_aside:
            kept = _aside_name(path)
            try:
                shutil.copy2(path, kept)
            except OSError as exc:
                log.warning("could not keep a copy of %s: %s", path, exc)
                kept = None
        if kept is not None:
            warnings.append(f"the original settings file is kept as {kept.name}")
    return LoadResult(settings, warnings, kept_aside=kept, existed=True)


def _broken(path: Path, reason: str, keep_aside: bool) -> LoadResult:
    if not keep_aside:
        msg = (f"the settings file {path} is broken ({reason}); the app will keep it aside as "
               f"{path.name}.broken-<time> and start with defaults")
        log.warning(msg)
        return LoadResult(Settings(), [msg], existed=True, broken=True)
    aside = _aside_name(path)
    try:
        os.replace(path, aside)
    except OSError as move_exc:
        _unreadable.add(path)
        msg = (f"the settings file {path} is broken ({reason}) and could not be moved aside ({move_exc}); started "
               "with defaults, and Parley will not save settings over it")
        log.warning(msg)
        return LoadResult(Settings(), [msg], existed=True, unreadable=True, broken=True)
    msg = f"the settings file {path} is broken ({reason}); kept it as {aside.name} and started with defaults"
    log.warning(msg)
    return LoadResult(Settings(), [msg], kept_aside=aside, existed=True, broken=True)


def _save_target(path: Path) -> Path:
    """Where saving ``path`` may write, or SettingsNotSaved naming why it must not."""
    if path in _unreadable and path.exists():
        raise SettingsNotSaved(f"{path} could not be read when Parley started, and Parley does "
                               "not replace a settings file it could not read; fix or move it, then restart Parley")
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            raise SettingsNotSaved(f"{path} is a link to {os.readlink(path)}, which does not "
                                   "exist; create that file or remove the link")
        path = target
    _, problem = _read_problem(path)
    if problem:
        raise SettingsNotSaved(f"{path} {problem}, and Parley does not replace a settings "
                               "file it cannot read; make it readable for your user (e.g. sudo chown $USER on it) or "
                               "move it away")
    return path


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Atomically write the settings file (creating its folder). Raises OSError when the disk refuses, and
    :class:`SettingsNotSaved` when the existing file could not be read (it is never replaced then)."""
    path = _save_target(path or settings_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write_text(path, text)
    log.debug("settings saved to %s", path)
    return path
