"""Screenshots for docs/screenshots: the main window idle, listening, speaking (also in a dark palette) and after an
interruption, the settings dialog (and its refusal of invalid values) and the model manager.

The window is driven with real :class:`core.engine.events.Event` objects (the same ones the engine emits), so the
pictures are reproducible. Offscreen by default; under Xvfb with ``PARLEY_TEST_XVFB=1`` and the testenv's DISPLAY.
``PARLEY_SCREENSHOT_DIR`` changes where they go (default: docs/screenshots in the repository).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from app.model_manager import ModelManagerDialog
from app.settings_dialog import SettingsDialog
from app.widgets.theme import dark_palette
from _shared import event
from core.settings import Settings
from core.settings import download as dl

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PARLEY_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")


def _settle(ms: int = 50) -> None:
    app = QApplication.instance()
    for _ in range(5):
        app.processEvents()


def _fix_times(w: MainWindow) -> None:
    """Fixed clock times in the transcript, so the pictures do not change from run to run."""
    import datetime

    base = datetime.datetime(2026, 11, 22, 10, 30, 0).timestamp()
    for i, e in enumerate(w.transcript.order):
        e.data.wall = base + 4 * i
        e.refresh()


def _save(widget, name: str) -> Path:
    if isinstance(widget, MainWindow):
        _fix_times(widget)
    _settle()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    img = widget.grab()
    assert not img.isNull()
    assert img.save(str(path)), path
    return path


class Script:
    """Feeds a plausible conversation into the window, with engine-like timing."""

    def __init__(self, w: MainWindow) -> None:
        self.w = w
        self.t = 0.0

    def ev(self, type_: str, turn: int, **data) -> None:
        self.w.handle_event(event(type_, round(self.t, 3), turn, data))

    def chunks(self, n: int, turn: int, probs, vad: float, mic: float, out: float) -> None:
        for i in range(n):
            self.t += 0.16
            p = probs(i) if callable(probs) else probs
            self.ev("state_probs", turn, probs=list(p))
            wobble = 6 * math.sin(self.t * 7)
            self.ev("meter", turn, mic_db=mic + wobble, clean_db=(mic - 4 + wobble) if mic > -60 else -70,
                    out_db=out, vad=vad(i) if callable(vad) else vad)

    def freeze(self) -> None:
        self.w.panel.chart.frozen_now = self.t + 0.05
        self.w.panel.chart.update()


@pytest.fixture
def window(qtbot, config_dir):
    w = MainWindow(Settings(), stack_factory=lambda s, p: None, persist=False)
    qtbot.addWidget(w)
    w.resize(1180, 720)
    w.show()
    # as if a profile were loaded and the microphone open (no model needed for pictures)
    w.profile_loaded = "lite"
    w.status_profile.setText("Profile: lite on cpu (Whisper tiny.en + SmolLM2-135M + Piper joe)")
    w.listening = True
    w.act_listen.blockSignals(True)
    w.act_listen.setChecked(True)
    w.act_listen.blockSignals(False)
    w._update_controls()
    w.status_context.setText("context 212 tokens")
    yield w
    w.close()
    assert w.wait_shut_down()


def test_screenshots_main_window(window):
    w = window
    # idle: nothing said yet
    w.listening = False
    w.act_listen.blockSignals(True)
    w.act_listen.setChecked(False)
    w.act_listen.blockSignals(False)
    w._update_controls()
    w.handle_event(event("state", 0.0, 0, {"state": "idle"}))
    w.panel.chart.frozen_now = 0.05
    shots = [_save(w, "main_idle")]
    w.panel.chart.frozen_now = None

    # listening, the user asking a first question, answer, then a second question being spoken
    w.listening = True
    w.act_listen.blockSignals(True)
    w.act_listen.setChecked(True)
    w.act_listen.blockSignals(False)
    w._update_controls()
    s = Script(w)
    s.ev("state", 0, state="listening")
    s.chunks(8, 0, (0.97, 0.01, 0.02), 0.02, -62.0, -90.0)
    s.ev("vad_onset", 1, prob=0.99)
    s.ev("state", 1, state="user_speaking")
    s.chunks(10, 1, lambda i: (0.9 - 0.02 * i, 0.05 + 0.02 * i, 0.05), lambda i: 0.95, -24.0, -90.0)
    s.ev("user_text", 1, text="What is the capital", final=False)
    s.chunks(4, 1, lambda i: (0.6 - 0.12 * i, 0.3 + 0.13 * i, 0.1 - 0.02 * i), lambda i: 0.3 - 0.07 * i, -45.0,
             -90.0)
    s.ev("user_text", 1, text=" of France?", final=True, full="What is the capital of France?")
    s.ev("turn_decision", 1, state="ss")
    s.ev("state", 1, state="thinking")
    s.chunks(3, 1, (0.1, 0.85, 0.05), 0.02, -62.0, -90.0)
    s.ev("assistant_text", 1, text="The capital of France is Paris.")
    s.ev("state", 1, state="speaking")
    s.ev("latency", 1, first_audio_ms=612.0, first_played_ms=688.0)
    s.chunks(12, 1, (0.95, 0.03, 0.02), 0.04, -50.0, -16.0)
    s.ev("state", 1, state="listening")
    s.chunks(12, 1, (0.97, 0.01, 0.02), 0.02, -62.0, -90.0)
    s.freeze()
    shots.append(_save(w, "main_listening"))

    # speaking: a second question, its answer streaming out
    s.ev("vad_onset", 2, prob=0.98)
    s.ev("state", 2, state="user_speaking")
    s.chunks(9, 2, lambda i: (0.92, 0.05, 0.03), 0.93, -22.0, -90.0)
    s.ev("user_text", 2, text="And how many people live", final=False)
    s.chunks(3, 2, (0.9, 0.06, 0.04), 0.9, -24.0, -90.0)
    s.ev("user_text", 2, text="What is the population of Paris?", partial=True, final=True)
    s.ev("turn_decision", 2, state="ss")
    s.ev("state", 2, state="thinking")
    s.chunks(4, 2, (0.08, 0.88, 0.04), 0.02, -62.0, -90.0)
    for piece in ("About", " two", " million", " people", " live", " in", " Paris", " itself,", " and"):
        s.ev("assistant_text", 2, text=piece)
    s.ev("state", 2, state="speaking")
    s.ev("latency", 2, first_audio_ms=540.0, first_played_ms=597.0)
    s.chunks(10, 2, (0.96, 0.02, 0.02), 0.05, -48.0, -14.0)
    for piece in (" more", " than", " twelve", " million", " in", " the", " whole", " metropolitan", " area."):
        s.ev("assistant_text", 2, text=piece)
    s.freeze()
    shots.append(_save(w, "main_speaking"))
    # the same moment with a dark system palette: everything follows it
    app = QApplication.instance()
    light = app.palette()
    app.setPalette(dark_palette())
    try:
        s.freeze()
        shots.append(_save(w, "main_dark"))
    finally:
        app.setPalette(light)

    # the user talks over the answer: barge-in, the rest of the answer is never heard
    s.ev("vad_onset", 3, prob=0.97, during_reply=True)
    s.chunks(4, 3, lambda i: (0.7 - 0.15 * i, 0.2 + 0.15 * i, 0.1), 0.92, -20.0, -15.0)
    s.ev("turn_decision", 3, state="ss", barge_in=True)
    s.ev("state", 3, state="interrupted")
    s.ev("interruption", 3, reply_turn=2,
         heard_text="About two million people live in Paris itself,",
         unheard_text="and more than twelve million in the whole metropolitan area.")
    s.ev("state", 3, state="user_speaking")
    s.ev("user_text", 3, text="Thanks, that's enough.", final=False)
    s.chunks(5, 3, (0.8, 0.15, 0.05), 0.9, -23.0, -90.0)
    s.freeze()
    shots.append(_save(w, "main_interrupted"))
    a2 = w.transcript.entry(2, "assistant")
    assert a2.data.interrupted and "<s " in a2.body.text()
    for p in shots:
        assert p.stat().st_size > 10_000


def test_screenshots_settings_dialog(qtbot, config_dir, tmp_path, monkeypatch):
    import core.settings.device_test as dt

    names = {"input": ["ParleyTestSink Monitor", "USB Headset Mic"], "output": ["ParleyTestSink", "USB Headset"]}
    monkeypatch.setattr(dt, "device_names", lambda kind: names[kind])   # the same picture on every machine
    d = SettingsDialog(Settings())
    qtbot.addWidget(d)
    d.resize(720, 560)
    d.show()
    qtbot.waitUntil(lambda: d.in_device.count() == 3, timeout=5000)
    d._set_combo(d.in_device, "USB Headset Mic")
    d.test_meter.set_level(-23.0)
    d.test_status.setText("Tone played. Microphone peak level -23 dBFS.")
    d.tabs.setCurrentIndex(0)
    _save(d, "settings_audio")
    # invalid values are refused with a message, in the dialog
    d.tabs.setCurrentIndex(1)
    d.profile.setCurrentIndex(d.profile.findData("freeze-omni"))
    d.checkpoint_dir.setText("/home/you/models/Freeze-Omni")          # does not exist
    d.backbone_dir.setText(str(REPO / "docs"))                        # exists, no config.json
    assert d.on_apply() is False
    _save(d, "settings_invalid")
    d.close()


def test_screenshots_model_manager(qtbot, config_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("app.model_manager.gpu_info", lambda: None)
    s = Settings()
    d = ModelManagerDialog(s)
    qtbot.addWidget(d)
    d.resize(980, 760)
    d.show()
    qtbot.waitUntil(lambda: d.gpu_known, timeout=5000)
    d.dest.setText("/home/you/.local/share/parley/models")
    d._set_downloading(True)
    d._dl_started = __import__("time").monotonic() - 60
    d._download_progress(dl.DownloadProgress("checkpoints/decoder/final.pt", 4, 9, 870_000_000, 2_330_000_000))
    _save(d, "model_manager")
    d._set_downloading(False)
    d.close()
