"""Reading and writing the one settings file (JSON) under the platform config dir.

* ``PARLEY_CONFIG_DIR`` overrides the folder (tests, portable installs).
* A file that cannot be parsed is renamed ``settings.json.broken-<time>`` and defaults are used; a file that parses
  but has bad or unknown values is copied aside the same way before anything is written over it, so a user's
  hand edits are never silently lost.
* Writes are atomic: a temporary file in the same folder, fsync, then ``os.replace``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
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


@dataclass
class LoadResult:
    settings: Settings
    warnings: list[str] = field(default_factory=list)
    kept_aside: Path | None = None   # where a broken/partly invalid file was moved or copied
    existed: bool = False            # False on first run


def _aside_name(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.broken-{stamp}-{n}")
        n += 1
    return candidate


def load_settings(path: Path | None = None) -> LoadResult:
    """Read the settings file. Never raises for a bad file: falls back to defaults and says why."""
    path = path or settings_path()
    if not path.exists():
        log.info("no settings file at %s: first run, using defaults", path)
        return LoadResult(Settings(), existed=False)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read settings file {path} ({exc}); using defaults"
        log.warning(msg)
        return LoadResult(Settings(), [msg], existed=True)
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        aside = _aside_name(path)
        try:
            os.replace(path, aside)
        except OSError as move_exc:
            msg = f"settings file {path} is broken ({exc}) and could not be moved aside ({move_exc}); using defaults"
            log.warning(msg)
            return LoadResult(Settings(), [msg], existed=True)
        msg = f"settings file {path} is broken ({exc}); kept it as {aside.name} and started with defaults"
        log.warning(msg)
        return LoadResult(Settings(), [msg], kept_aside=aside, existed=True)
    settings, warnings = Settings.from_dict(data)
    kept: Path | None = None
    if warnings:
        for w in warnings:
            log.warning("settings: %s", w)
        kept = _aside_name(path)
        try:
            shutil.copy2(path, kept)
            warnings.append(f"the original settings file was kept as {kept.name}")
        except OSError as exc:
            log.warning("could not keep a copy of %s: %s", path, exc)
            kept = None
    return LoadResult(settings, warnings, kept_aside=kept, existed=True)


def save_settings(settings: Settings, path: Path | None = None) -> Path:
    """Atomically write the settings file (creating its folder). Raises OSError when the disk refuses."""
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(settings.to_dict(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    atomic_write_text(path, text)
    log.debug("settings saved to %s", path)
    return path
