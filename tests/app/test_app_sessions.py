"""Recorded sessions from the main window: a "Sessions…" button beside Record opens the session browser on the
configured folder, and a recording that stops says where it was saved, with an "Open folder" action (its URL is
checked instead of opening a file manager). The saved-notice test records for real: the tiny Freeze-Omni profile
loaded by the app's own stack over a private PulseAudio sink, Record switched on and off."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QToolBar

from _loop import private_loop
from app.main_window import MainWindow
from app.session_browser import SessionBrowser
from _shared import default_fixture, event
from core.session.recorder import SessionRecorder
from core.session.store import is_session_dir
from core.settings import Settings

pytestmark = pytest.mark.ui
FIXTURE = default_fixture()


def _record(root: Path, name: str) -> Path:
    rec = SessionRecorder(root / name, profile="lite", sync_interval_s=0.05)
    rec.start()
    rec.write_mic_raw(np.zeros(16_000, np.float32), 16_000, t=0.0)
    rec.on_event(event("user_text", 0.2, 1, {"text": "hello", "final": True}))
    rec.close()
    return rec.path


def test_sessions_button_sits_beside_record_and_opens_the_browser(qtbot, config_dir, tmp_path):
    root = tmp_path / "my sessions"
    path = _record(root, "2026-11-22_10-30-00")
    s = Settings()
    s.recording.folder = str(root)
    w = MainWindow(s, persist=False)
    qtbot.addWidget(w)
    w.show()
    toolbar = w.findChild(QToolBar, "controls")
    actions = [a for a in toolbar.actions() if not a.isSeparator()]
    assert actions.index(w.act_sessions) == actions.index(w.act_record) + 1
    assert toolbar.widgetForAction(w.act_sessions).text().startswith("Sessions")
    w.act_sessions.trigger()
    dlg = w._sessions_dialog
    assert isinstance(dlg, SessionBrowser) and dlg.isVisible() and not dlg.isModal()
    assert dlg.root == root and dlg.table.rowCount() == 1 and dlg.table.item(0, 5).text() == str(path)
    w.act_sessions.trigger()                      # a second click brings the same browser forward
    assert w._sessions_dialog is dlg
    w.close()
    assert w.wait_shut_down()


def test_a_stopped_recording_says_where_it_is(qtbot, config_dir, tmp_path, monkeypatch):
    """The notice, driven by the worker's ``recording`` signal (what it reports after switching the recorder)."""
    root = tmp_path / "sessions"
    s = Settings()
    s.recording.folder = str(root)
    w = MainWindow(s, persist=False)
    qtbot.addWidget(w)
    opened: list[QUrl] = []
    monkeypatch.setattr(w, "open_url", lambda url: opened.append(url) or True)
    w.worker.recording.emit(True)
    path = _record(root, "2026-11-22_10-30-00")
    w.worker.recording.emit(False)
    qtbot.waitUntil(lambda: any(t.startswith("Recording saved to") for t in w.notices.texts()), timeout=3000)
    banner = [b for b in w.notices.banners if b.text.startswith("Recording saved to")][0]
    assert banner.text == f"Recording saved to {path}" and banner.action.text() == "Open folder"
    assert w.saved_recording_url == QUrl.fromLocalFile(str(path))
    banner.action.click()
    assert opened == [QUrl.fromLocalFile(str(path))]
    # a recording that never started says nothing
    n = len(w.notices.history)
    w.worker.recording.emit(False)
    assert len(w.notices.history) == n
    w.close()
    assert w.wait_shut_down()


@pytest.fixture(scope="module")
def loop():
    yield from private_loop("sessions", "paplay")


@pytest.mark.skipif(not (FIXTURE / "checkpoints" / "audiollm" / "final.pt").is_file(),
                    reason="tiny Freeze-Omni fixture missing (set PARLEY_FIXTURES)")
@pytest.mark.audio
@pytest.mark.slow
def test_a_real_recording_ends_with_a_saved_notice(qtbot, config_dir, tmp_path, loop, monkeypatch):
    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir = str(FIXTURE)
    s.model.backbone_dir = str(FIXTURE / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    s.recording.folder = str(tmp_path / "sessions")
    w = MainWindow(s, persist=False)
    qtbot.addWidget(w)
    opened: list[QUrl] = []
    monkeypatch.setattr(w, "open_url", lambda url: opened.append(url) or True)
    w.show()
    try:
        w.start_engine(listen=True)
        qtbot.waitUntil(lambda: w.profile_loaded == "freeze-omni" and w.listening, timeout=90_000)
        w.act_record.trigger()                                  # on
        qtbot.waitUntil(lambda: w._recording_active, timeout=15_000)
        time.sleep(0.5)
        w.act_record.trigger()                                  # off
        qtbot.waitUntil(lambda: any(t.startswith("Recording saved to") for t in w.notices.texts()),
                        timeout=15_000)
        saved = Path(w.saved_recording_url.toLocalFile())
        assert saved.parent == tmp_path / "sessions" and is_session_dir(saved)
        assert (saved / "meta.json").is_file()
        banner = [b for b in w.notices.banners if b.text.startswith("Recording saved to")][0]
        banner.action.click()
        assert opened == [QUrl.fromLocalFile(str(saved))]
    finally:
        w.close()
        assert w.wait_shut_down(60_000)
