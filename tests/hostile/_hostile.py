"""Helpers for the hostile tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARLEY = Path(sys.executable).with_name("parley")


@dataclass
class Home:
    root: Path

    @property
    def config(self) -> Path:
        """Parley's config folder (settings.json)."""
        return self.root / ".config" / "parley"

    @property
    def data(self) -> Path:
        return self.root / ".local" / "share" / "parley"

    @property
    def sessions(self) -> Path:
        return self.data / "sessions"

    @property
    def logs(self) -> Path:
        return self.root / ".local" / "state" / "parley" / "log"

    @property
    def settings(self) -> Path:
        return self.config / "settings.json"


def run_parley(*args: str, timeout: float = 300, prefix: list[str] | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """The installed ``parley`` command in a subprocess (text output captured)."""
    return subprocess.run([*(prefix or []), str(PARLEY), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kwargs)


def run_python(code: str, timeout: float = 300, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def tree(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folder`` (not following links) with its mode and, for files, content: a snapshot to prove
    that nothing changed."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(folder))] = (st.st_mode, content)
    return out
