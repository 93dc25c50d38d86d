"""The main window's life cycle: it opens inside the screen (a saved geometry from a bigger screen, the default size
on a small or 1.5x-scaled one), and closing hides it at once while the engine shuts down behind it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QByteArray, QObject, QRect, Signal, Slot

from app.main_window import MainWindow
from app.widgets.geometry import fit_rect
from core.settings import Settings

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]


def test_fit_rect_shrinks_and_moves_into_the_available_area():
    avail = QRect(0, 27, 853, 506)                      # 1280x800 at 150 %, a top panel of 27 px
    assert fit_rect(QRect(100, 100, 400, 300), avail) == QRect(100, 100, 400, 300)     # fits: unchanged
    assert fit_rect(QRect(300, 200, 1100, 712), avail) == QRect(0, 27, 853, 506)       # too big: the whole area
    assert fit_rect(QRect(700, 400, 400, 300), avail) == QRect(453, 233, 400, 300)     # off the right/bottom
    assert fit_rect(QRect(-50, 0, 400, 300), avail) == QRect(0, 27, 400, 300)          # off the left/top
    second = QRect(1920, 0, 1280, 1024)                 # a second screen to the right
    assert fit_rect(QRect(2900, 900, 600, 400), second) == QRect(2600, 624, 600, 400)


def _saved_geometry(qtbot, width: int, height: int, x: int, y: int) -> str:
    """What a window of that size at that place saves (as a bigger screen would have let it be)."""
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.setMinimumSize(100, 100)
    w.resize(width, height)
    w.move(x, y)
    geo = bytes(w.saveGeometry().toBase64()).decode("ascii")
    w.close()
    assert w.wait_shut_down()
    return geo


def test_a_saved_geometry_from_a_bigger_screen_is_fitted(qtbot, config_dir):
    s = Settings()
    s.ui.geometry = _saved_geometry(qtbot, 2400, 1500, 1700, 900)
    w = MainWindow(s, persist=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    avail = w.screen().availableGeometry()
    assert avail.contains(w.frameGeometry()), (avail, w.frameGeometry())
    assert w.width() >= min(avail.width(), 760) - 40           # as big as the screen allows, not tiny
    w.close()
    assert w.wait_shut_down()


_SCALED = r"""
import json, sys
import app
from PySide6.QtCore import QByteArray
from PySide6.QtWidgets import QApplication
from app.main_window import MainWindow
from core.settings import Settings
qt = QApplication(sys.argv[:1])
out = {}
for name, geometry in (("first start", ""), ("saved unscaled", sys.argv[1])):
    s = Settings()
    s.ui.geometry = geometry
    w = MainWindow(s, persist=False)
    w.show()
    qt.processEvents()
    avail = w.screen().availableGeometry()
    f = w.frameGeometry()
    out[name] = {"avail": [avail.x(), avail.y(), avail.width(), avail.height()],
                 "frame": [f.x(), f.y(), f.width(), f.height()], "inside": avail.contains(f),
                 "dpr": w.devicePixelRatio()}
    w.close()
    w.wait_shut_down()
print(json.dumps(out))
"""


def test_at_150_percent_scaling_the_window_fits_the_screen(qtbot, config_dir, tmp_path):
    """QT_SCALE_FACTOR=1.5 in a fresh process: the logical screen is 1.5 times smaller than its pixels. Both the
    first start (default size 1100x680, minimum 760x480) and a geometry saved unscaled must fit."""
    saved = _saved_geometry(qtbot, 1100, 680, 60, 40)
    script = tmp_path / "scaled.py"
    script.write_text(_SCALED)
    env = dict(os.environ, QT_SCALE_FACTOR="1.5", PYTHONPATH=str(REPO), PARLEY_CONFIG_DIR=str(config_dir))
    if os.environ.get("PARLEY_TEST_XVFB") != "1" or not os.environ.get("DISPLAY"):
        laptop = tmp_path / "laptop.json"           # a 1280x800 laptop screen: 853x533 at 150 %
        laptop.write_text(json.dumps({"screens": [{"name": "laptop", "x": 0, "y": 0, "width": 1280,
                                                   "height": 800, "logicalDpi": 96, "logicalBaseDpi": 96,
                                                   "dpr": 1}]}))
        env["QT_QPA_PLATFORM"] = f"offscreen:configfile={laptop}"
    r = subprocess.run([sys.executable, str(script), saved], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for name, res in out.items():
        assert res["dpr"] == pytest.approx(1.5) and res["avail"][3] < 680 + 32   # the default would not fit
        assert res["inside"], f"{name}: frame {res['frame']} runs off the available area {res['avail']}"


class _Busy(QObject):
    """Keeps the worker thread busy, as a model that is still loading does, until released."""

    go = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()
        self.go.connect(self._block)

    @Slot()
    def _block(self) -> None:
        self.started.set()
        self.release.wait(60)


def test_close_hides_the_window_at_once_and_shuts_down_behind_it(qtbot, config_dir):
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    busy = _Busy()
    busy.moveToThread(w.thread_)
    busy.go.emit()                         # queued into the worker thread: it is busy until released
    qtbot.waitUntil(busy.started.is_set, timeout=5000)
    ended: list[float] = []
    w.shut_down.connect(lambda: ended.append(time.monotonic()))

    assert w.close()
    assert not w.isVisible()               # gone in the same event-loop turn ...
    assert w.thread_.isRunning() and not ended   # ... while the worker has not even started to shut down
    qtbot.wait(300)                        # the GUI's event loop goes on meanwhile
    assert not w.isVisible() and w.thread_.isRunning() and not ended
    busy.release.set()                     # the "load" ends; the queued shutdown runs; the thread ends
    qtbot.waitUntil(lambda: bool(ended), timeout=30_000)
    assert not w.thread_.isRunning()
    assert w.wait_shut_down(0)             # nothing left to wait for
    assert w.close()                       # a second close does nothing more


def test_the_hint_matches_the_state(qtbot, config_dir):
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.show()
    hint = w.transcript._placeholder
    assert hint.text() == "No voice model is loaded yet." and not w.act_listen.isEnabled()
    w._on_loading(True, "Loading the lite profile")
    assert hint.text().startswith("Loading the voice model")
    w.profile_loaded = "lite"                  # what _on_profile_ready records
    w._on_loading(False, "")
    assert hint.text() == "Press Start listening (Ctrl+L), then just talk." and w.act_listen.text() == "Start listening"
    w._on_listening(True)
    assert hint.text().startswith("Getting ready") and w.act_listen.text() == "Stop listening"
    w._audio_ready()                           # the ready sound has played (what the audio_ready event leads to)
    assert hint.text().startswith("Just talk") and "Esc" in hint.text()
    w.act_mute.trigger()
    assert "muted" in hint.text()
    w.act_mute.trigger()
    w.act_ptt.trigger()
    assert hint.text().startswith("Hold Space")
    w.close()
    assert w.wait_shut_down()
