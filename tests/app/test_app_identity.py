"""Parley's identity: the icon in assets/ (PNGs rendered from the SVG), the self-test's icon check, the window's
icon and class on a real X server, and the .desktop entry installed under a temporary XDG_DATA_HOME."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from app import desktop
from app.desktop import (
    ICON_SIZES, DesktopEntryError, check_icon, desktop_entry_text, install_desktop_entry, uninstall_desktop_entry,
)

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]


def _pixels(image: QImage) -> list[tuple[int, int, int, int]]:
    image = image.convertToFormat(QImage.Format.Format_RGBA8888)
    data = bytes(image.constBits())
    return [tuple(data[i:i + 4]) for i in range(0, len(data), 4)]


def test_assets_hold_the_svg_and_every_png_size_rendered_from_it(qapp, tmp_path):
    assert desktop.assets_dir() == REPO / "assets"
    fresh = desktop.render_icon_pngs(tmp_path)
    assert [p.name for p in fresh] == [f"parley-{s}.png" for s in ICON_SIZES]
    for size, path in zip(ICON_SIZES, fresh):
        committed = QImage(str(desktop.icon_png(size)))
        assert (committed.width(), committed.height()) == (size, size)
        worst = max(max(abs(a - b) for a, b in zip(p, q))
                    for p, q in zip(_pixels(committed), _pixels(QImage(str(path)))))
        assert worst <= 8, f"assets/icons/parley-{size}.png is not the SVG's rendering (re-render it)"
        # a square with rounded corners: transparent corner, opaque centre
        px = _pixels(committed)
        assert px[0][3] == 0 and px[(size // 2) * size + size // 2][3] == 255


def test_the_self_test_icon_check(qapp, monkeypatch, tmp_path):
    assert check_icon() == f"icon {len(ICON_SIZES)} sizes"
    monkeypatch.setattr(desktop, "assets_dir", lambda: tmp_path)      # an installation without assets/
    with pytest.raises(RuntimeError, match="icon files missing"):
        check_icon()
    (tmp_path / "icons").mkdir()
    shutil.copy(REPO / "assets" / "parley.svg", tmp_path)
    for size in ICON_SIZES:
        shutil.copy(REPO / "assets" / "icons" / "parley-16.png", tmp_path / "icons" / f"parley-{size}.png")
    with pytest.raises(RuntimeError, match="is not a 24x24 image"):
        check_icon()


def test_main_window_has_the_icon(qtbot, config_dir):
    from app.main_window import MainWindow
    from core.settings import Settings

    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    try:
        icon = w.windowIcon()
        assert not icon.isNull()
        assert icon.pixmap(32, 32).toImage().pixelColor(16, 16).alpha() == 255
    finally:
        w.close()
        assert w.wait_shut_down(30_000)


@pytest.mark.skipif(not shutil.which("xprop"), reason="xprop not found (apt-get install x11-utils)")
def test_window_class_and_icon_on_a_real_x_server(tmp_path):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no X display (eval \"$(scripts/testenv.sh start)\")")
    script = tmp_path / "parley"          # argv[0] of the installed command is 'parley'
    script.write_text(
        "import subprocess, sys\n"
        "import app\n"
        "from PySide6.QtCore import QTimer\n"
        "from PySide6.QtWidgets import QApplication, QWidget\n"
        "from app.desktop import apply_identity\n"
        "qt = QApplication(sys.argv[:1]); apply_identity(qt)\n"
        "w = QWidget(); w.show()\n"
        "def probe():\n"
        "    r = subprocess.run(['xprop', '-id', str(int(w.winId())), 'WM_CLASS', '_NET_WM_ICON'],\n"
        "                       capture_output=True, text=True)\n"
        "    print(r.stdout.splitlines()[0]); print('icon' if 'Icon (16 x 16)' in r.stdout else 'no icon')\n"
        "    print(qt.desktopFileName()); qt.quit()\n"
        "QTimer.singleShot(300, probe)\n"
        "qt.exec()\n")
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[:3] == ['WM_CLASS(STRING) = "parley", "Parley"', "icon", "parley"], out.stdout + out.stderr
    assert f"StartupWMClass={desktop.WM_CLASS}" in desktop_entry_text(["parley"])


def _read_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str          # keys are case-sensitive
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def test_install_desktop_entry_under_xdg_data_home(qapp, tmp_path, monkeypatch):
    home = tmp_path / "share"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    written = install_desktop_entry(command=["/opt/my apps/parley"])
    entry_path = home / "applications" / "parley.desktop"
    assert entry_path in written
    entry = _read_entry(entry_path)
    assert entry["Type"] == "Application" and entry["Name"] == "Parley" and entry["Icon"] == "parley"
    assert entry["Exec"] == '"/opt/my apps/parley"'       # quoted: the path holds a space
    assert entry["Terminal"] == "false" and "AudioVideo" in entry["Categories"]
    for size in ICON_SIZES:
        png = home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / "parley.png"
        image = QImage(str(png))
        assert (image.width(), image.height()) == (size, size), png
    svg = home / "icons" / "hicolor" / "scalable" / "apps" / "parley.svg"
    assert svg.read_bytes() == (REPO / "assets" / "parley.svg").read_bytes()
    assert oct(entry_path.stat().st_mode & 0o777) == "0o644"
    if shutil.which("desktop-file-validate"):
        r = subprocess.run(["desktop-file-validate", str(entry_path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr

    # installing again replaces Parley's own entry (a new command), and the default command is a real program
    install_desktop_entry()
    exec_line = _read_entry(entry_path)["Exec"]
    assert Path(exec_line.split()[0].strip('"')).is_file()

    removed = uninstall_desktop_entry()
    assert entry_path in removed and not entry_path.exists() and not svg.exists()
    assert uninstall_desktop_entry() == []


def test_a_desktop_entry_parley_did_not_write_is_never_touched(tmp_path):
    home = tmp_path / "share"
    entry = home / "applications" / "parley.desktop"
    entry.parent.mkdir(parents=True)
    entry.write_text("[Desktop Entry]\nType=Application\nName=Someone else's Parley\nExec=/usr/bin/other\n")
    before = entry.read_bytes()
    with pytest.raises(DesktopEntryError, match="not written by Parley"):
        install_desktop_entry(home)
    with pytest.raises(DesktopEntryError, match="not written by Parley"):
        uninstall_desktop_entry(home)
    assert entry.read_bytes() == before
    assert not (home / "icons").exists()


def test_exec_quoting_follows_the_desktop_entry_spec():
    assert desktop._exec_arg("/usr/bin/parley") == "/usr/bin/parley"
    assert desktop._exec_arg("/a b/parley") == '"/a b/parley"'
    # inside quotes: \" \` \$ \\ ; then the string value doubles every backslash
    assert desktop._exec_arg('/a"$b') == '"/a\\\\"\\\\$b"'
    assert desktop._exec_arg("/100%/parley") == "/100%%/parley"


def test_help_says_a_bare_parley_opens_the_app():
    out = subprocess.run([sys.executable, "-m", "core.cli", "--help"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "Run `parley` with no command to open the desktop app" in text


def test_the_bundle_ships_and_finds_its_assets(qapp, monkeypatch, tmp_path):
    """PyInstaller unpacks data under sys._MEIPASS: the spec puts assets/ there, and the icon is found there."""
    spec = (REPO / "packaging" / "parley.spec").read_text()
    assert 'datas.append((os.path.join(SPECPATH, "..", "assets"), "assets"))' in spec
    shutil.copytree(REPO / "assets", tmp_path / "assets")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert desktop.assets_dir() == tmp_path / "assets"
    assert check_icon() == f"icon {len(ICON_SIZES)} sizes"
