"""Set-up for the app tests: Qt offscreen (a 1920x1080 screen) unless PARLEY_TEST_XVFB=1 (then the testenv's DISPLAY
is used), the PySide6 reference-count fix applied before the QApplication exists, and a private config dir per
test."""

from __future__ import annotations

import os

OFFSCREEN_SCREEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "offscreen.json")   # 1920x1080

if os.environ.get("PARLEY_TEST_XVFB") != "1" or not os.environ.get("DISPLAY"):
    # a desktop-sized screen (Qt's offscreen default is 800x800, and windows are fitted to their screen)
    os.environ["QT_QPA_PLATFORM"] = f"offscreen:configfile={OFFSCREEN_SCREEN}"

import app  # noqa: E402,F401  (pins None/True/False before Qt runs; see app/_pyside_fix.py)
import pytest  # noqa: E402


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    d = tmp_path / "config"
    monkeypatch.setenv("PARLEY_CONFIG_DIR", str(d))
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data"))
    return d


@pytest.fixture(autouse=True, scope="module")
def _gc_back_to_normal():
    """Each main window switches Python's automatic garbage collection to the GUI thread while it is open
    (app/gcguard.py); after a module the interpreter must collect as usual again, for the tests that follow."""
    yield
    import gc
    import warnings

    from app import gcguard

    if gcguard._users:
        warnings.warn(f"{gcguard._users} main window(s) left open by this module; garbage collection restored")
        gcguard._users = 1
        gcguard.release()
    assert gc.isenabled()
