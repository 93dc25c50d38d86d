"""Parley's identity on the desktop: the application icon, the window class / desktop file name, and the ``.desktop``
entry that puts Parley into the application menu.

The icon is drawn once as ``assets/parley.svg``; ``assets/icons/parley-<N>.png`` are rendered from it with Qt's SVG
renderer (``scripts/render_icons.py``). In the PyInstaller bundle ``assets/`` sits beside the
code (``sys._MEIPASS``).

:func:`install_desktop_entry` writes ``parley.desktop`` under ``$XDG_DATA_HOME/applications`` and the icon under
``$XDG_DATA_HOME/icons/hicolor`` (``~/.local/share`` when ``XDG_DATA_HOME`` is not set). It only ever writes or
removes files that carry Parley's marker: a ``parley.desktop`` written by someone else is left alone (a one-line
error says so). Nothing here needs Qt except :func:`app_icon`, :func:`apply_identity`, :func:`check_icon` and the
icon rendering.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

APP_DISPLAY_NAME = "Parley"
ORGANIZATION = "Parley"
DESKTOP_ID = "parley"                 # parley.desktop; also Qt's desktop file name (the Wayland app id)
ICON_NAME = "parley"                  # the themed icon name in the .desktop entry
WM_CLASS = "Parley"                   # the X11 class Qt derives from the application name
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)
MARKER_KEY = "X-Parley-Installed-By"  # present in every .desktop entry Parley writes
MARKER_VALUE = "parley --install-desktop-entry"


class DesktopEntryError(Exception):
    """The entry cannot be installed or removed; the message is one line that says why and what to do."""


# ------------------------------------------------------------------------------------------------ assets ----


def assets_dir() -> Path:
    """``assets/`` of the repository, or of the PyInstaller bundle when frozen."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "assets"
    return Path(__file__).resolve().parents[1] / "assets"


def icon_svg() -> Path:
    return assets_dir() / "parley.svg"


def icon_png(size: int) -> Path:
    return assets_dir() / "icons" / f"parley-{size}.png"


def render_icon_pngs(out_dir: Path | None = None, sizes: tuple[int, ...] = ICON_SIZES,
                     svg: Path | None = None) -> list[Path]:
    """Render the SVG icon to ``parley-<N>.png`` for each size (needs a QGuiApplication)."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    svg = svg or icon_svg()
    out_dir = out_dir or assets_dir() / "icons"
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise RuntimeError(f"{svg} is not a valid SVG image")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = out_dir / f"parley-{size}.png"
        if not image.save(str(path), "PNG"):
            raise OSError(f"cannot write {path}")
        written.append(path)
    return written


def app_icon() -> Any:
    """The application icon (a QIcon holding every PNG size and the SVG); an empty QIcon, with a warning in the log,
    when the assets are missing."""
    from PySide6.QtGui import QIcon

    icon = QIcon()
    for size in ICON_SIZES:
        path = icon_png(size)
        if path.is_file():
            icon.addFile(str(path))
    if icon_svg().is_file():
        icon.addFile(str(icon_svg()))
    if icon.isNull():
        log.warning("application icon not found in %s", assets_dir())
    return icon


def check_icon() -> str:
    """For the self-test: the icon loads from the assets in every size. Returns a summary; raises RuntimeError."""
    from PySide6.QtGui import QImage

    missing = [str(icon_png(s)) for s in ICON_SIZES if not icon_png(s).is_file()]
    if not icon_svg().is_file():
        missing.append(str(icon_svg()))
    if missing:
        raise RuntimeError(f"icon files missing: {', '.join(missing)}")
    for size in ICON_SIZES:
        image = QImage(str(icon_png(size)))
        if image.isNull() or (image.width(), image.height()) != (size, size):
            raise RuntimeError(f"{icon_png(size)} is not a {size}x{size} image")
    icon = app_icon()
    if icon.isNull() or icon.pixmap(64, 64).isNull():
        raise RuntimeError("the application icon does not load")
    return f"icon {len(ICON_SIZES)} sizes"


def apply_identity(qt_app: Any) -> None:
    """Name, desktop file name (window class / Wayland app id) and icon of the running QApplication."""
    qt_app.setApplicationName(APP_DISPLAY_NAME)
    qt_app.setOrganizationName(ORGANIZATION)
    qt_app.setDesktopFileName(DESKTOP_ID)
    icon = app_icon()
    if not icon.isNull():
        qt_app.setWindowIcon(icon)


# ------------------------------------------------------------------------------------------ .desktop entry ----


def data_home() -> Path:
    value = os.environ.get("XDG_DATA_HOME", "").strip()
    return Path(value) if value and Path(value).is_absolute() else Path.home() / ".local" / "share"


def default_exec() -> list[str]:
    """The command that starts Parley: the bundle's executable, the venv's ``parley`` script, or Python running
    the CLI module."""
    if getattr(sys, "frozen", False):
        return [sys.executable]
    script = Path(sys.executable).with_name("parley")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("parley")
    if found:
        return [found]
    return [sys.executable, "-m", "core.cli"]


_EXEC_RESERVED = set(' \t\n"\'\\><~|&;$*?#()`')


def _exec_arg(arg: str) -> str:
    """One argument of an ``Exec`` key (Desktop Entry spec: quote with double quotes when it holds a reserved
    character; inside, backslash-escape ``"`` `` ` `` ``$`` ``\\``; then the string value escapes backslashes)."""
    if arg and not any(c in _EXEC_RESERVED for c in arg):
        return arg.replace("%", "%%")
    quoted = "".join("\\" + c if c in '"`$\\' else c for c in arg).replace("%", "%%")
    return ('"' + quoted + '"').replace("\\", "\\\\")


def desktop_entry_text(command: list[str] | None = None) -> str:
    exec_line = " ".join(_exec_arg(a) for a in (command or default_exec()))
    return "\n".join([
        "[Desktop Entry]",
        "Type=Application",
        "Version=1.5",
        f"Name={APP_DISPLAY_NAME}",
        "GenericName=Voice assistant",
        "Comment=Talk with a voice assistant that runs entirely on this computer",
        f"Exec={exec_line}",
        f"Icon={ICON_NAME}",
        "Terminal=false",
        "Categories=AudioVideo;Audio;Utility;",
        "Keywords=voice;assistant;speech;talk;chat;",
        "StartupNotify=true",
        f"StartupWMClass={WM_CLASS}",
        f"{MARKER_KEY}={MARKER_VALUE}",
        "",
    ])


def _entry_path(home: Path) -> Path:
    return home / "applications" / f"{DESKTOP_ID}.desktop"


def _icon_targets(home: Path) -> list[tuple[Path, Path]]:
    hicolor = home / "icons" / "hicolor"
    pairs = [(icon_png(s), hicolor / f"{s}x{s}" / "apps" / f"{ICON_NAME}.png") for s in ICON_SIZES]
    pairs.append((icon_svg(), hicolor / "scalable" / "apps" / f"{ICON_NAME}.svg"))
    return pairs


def _ours(entry: Path) -> bool:
    try:
        text = entry.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(line.strip() == f"{MARKER_KEY}={MARKER_VALUE}" for line in text.splitlines())


def install_desktop_entry(home: Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Install ``parley.desktop`` and the icons under ``home`` (default: ``$XDG_DATA_HOME``). Returns the files
    written. Re-installing replaces Parley's own entry; anybody else's is never touched."""
    home = Path(home) if home is not None else data_home()
    entry = _entry_path(home)
    if entry.exists() and not _ours(entry):
        raise DesktopEntryError(f"{entry} exists and was not written by Parley; it is left as it is (move it "
                                "away to install Parley's entry)")
    missing = [str(src) for src, _ in _icon_targets(home) if not src.is_file()]
    if missing:
        raise DesktopEntryError(f"the icon files are missing from this installation: {', '.join(missing)}")
    from core.fsutil import atomic_file, atomic_write_text

    written: list[Path] = []
    try:
        for src, dst in _icon_targets(home):
            dst.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(dst, 0o644) as f:
                f.write(src.read_bytes())
            written.append(dst)
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(entry, desktop_entry_text(command), 0o644)
        written.append(entry)
    except OSError as exc:
        raise DesktopEntryError(f"cannot install the desktop entry under {home}: {exc}") from exc
    _refresh_caches(home)
    log.info("desktop entry installed: %s", entry)
    return written


def uninstall_desktop_entry(home: Path | None = None) -> list[Path]:
    """Remove what :func:`install_desktop_entry` wrote (only when the entry is Parley's). Returns the files
    removed."""
    home = Path(home) if home is not None else data_home()
    entry = _entry_path(home)
    if not entry.exists():
        return []
    if not _ours(entry):
        raise DesktopEntryError(f"{entry} was not written by Parley; it is left as it is")
    removed = []
    for _, dst in _icon_targets(home):
        if dst.is_file():
            dst.unlink()
            removed.append(dst)
    entry.unlink()
    removed.append(entry)
    _refresh_caches(home)
    return removed


def _refresh_caches(home: Path) -> None:
    """Tell the desktop the icon theme changed (best effort: a newer mtime is what the caches look at)."""
    hicolor = home / "icons" / "hicolor"
    try:
        if hicolor.is_dir():
            os.utime(hicolor)
    except OSError:
        pass
