"""The session browser, offscreen: lists sessions, shows the timeline and transcript, plays streams, exports,
repairs and deletes."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from core.engine.events import Event  # noqa: E402
from core.session.recorder import SessionRecorder  # noqa: E402

pytestmark = pytest.mark.ui


class FakePlayer:
    def __init__(self) -> None:
        self.played: list[tuple[np.ndarray, int]] = []
        self.stops = 0

    def play(self, data, rate):
        self.played.append((np.asarray(data), rate))

    def stop(self):
        self.stops += 1


def _record(root, seconds, name):
    rec = SessionRecorder(root / name, profile="lite", sync_interval_s=0.05)
    rec.start()
    ramp = np.linspace(0, 0.5, int(seconds * 16_000), dtype=np.float32)
    rec.write_mic_raw(ramp, 16_000, t=0.0)
    rec.write_mic_clean(ramp, t=0.0)
    rec.write_playback(np.full(2400, 0.25, np.float32), 24_000, t=0.5)
    rec.write_assistant(np.full(2400, 0.25, np.float32), 24_000, turn=1)
    for ev in (Event("state", 0.0, 0, {"state": "listening"}),
               Event("levels", 0.1, 0, {"vad": 0.1}),
               Event("user_text", 0.2, 1, {"text": "hello browser", "final": True}),
               Event("turn_decision", 0.3, 1, {"state": "ss"}),
               Event("assistant_text", 0.4, 1, {"text": "Hello tester."})):
        rec.on_event(ev)
    rec.close()
    return rec.path


@pytest.fixture
def sessions(tmp_path):
    root = tmp_path / "sessions"
    return root, [_record(root, 1.0, "2026-01-01_10-00-00"), _record(root, 2.0, "2026-01-02_10-00-00")]


def test_lists_sessions_and_shows_timeline_beside_transcript(qtbot, sessions):
    from app.session_browser import SessionBrowser

    root, paths = sessions
    player = FakePlayer()
    dlg = SessionBrowser(root=root, player=player)
    qtbot.addWidget(dlg)
    dlg.show()
    assert dlg.table.rowCount() == 2
    assert str(root) in dlg.location_label.text() and "2 session(s)" in dlg.location_label.text()
    locations = {dlg.table.item(r, 5).text() for r in range(2)}
    assert locations == {str(p) for p in paths}
    row_of = {dlg.table.item(r, 5).text(): r for r in range(2)}
    assert dlg.table.item(row_of[str(paths[1])], 1).text() == "0:02"       # duration
    assert dlg.table.item(row_of[str(paths[1])], 2).text().endswith("KB")  # size

    with qtbot.waitSignal(dlg.sessionSelected) as sig:
        dlg.select_session(paths[0])
    assert sig.args == [str(paths[0])] and dlg.current_session() == paths[0]
    types = [row[2] for row in dlg.timeline_rows()]
    assert types == ["state", "user_text", "turn_decision", "assistant_text"]   # noisy 'levels' hidden
    dlg.all_events_check.setChecked(True)
    assert "levels" in [row[2] for row in dlg.timeline_rows()]
    assert "hello browser" in dlg.transcript.toPlainText() and "Hello tester." in dlg.transcript.toPlainText()
    assert dlg.available_streams() == ["mic_raw", "mic_clean", "playback", "assistant"]


def test_plays_streams_non_blocking_from_a_timeline_event(qtbot, sessions):
    from app.session_browser import SessionBrowser

    root, paths = sessions
    player = FakePlayer()
    dlg = SessionBrowser(root=root, player=player)
    qtbot.addWidget(dlg)
    dlg.select_session(paths[0])
    dlg.stream_combo.setCurrentIndex(dlg.available_streams().index("playback"))
    with qtbot.waitSignal(dlg.playbackStarted):
        qtbot.mouseClick(dlg.play_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    data, rate = player.played[-1]
    assert rate == 24_000 and len(data) == 12_000 + 2400 and data[-1] == pytest.approx(0.25)
    # double-click the user_text event at t=0.2: the mic stream plays from there
    dlg.stream_combo.setCurrentIndex(dlg.available_streams().index("mic_raw"))
    row = [r[2] for r in dlg.timeline_rows()].index("user_text")
    dlg._timeline_double_clicked(row, 0)
    data, rate = player.played[-1]
    assert rate == 16_000 and len(data) == 16_000 - 3200
    dlg.stop_playback()
    assert player.stops >= 2


def test_export_repair_delete(qtbot, sessions, tmp_path):
    from app.session_browser import SessionBrowser

    root, paths = sessions
    dlg = SessionBrowser(root=root, player=FakePlayer())
    qtbot.addWidget(dlg)
    dlg.select_session(paths[1])
    out = dlg.export_current(tmp_path / "x.zip")
    with zipfile.ZipFile(out) as zf:
        assert f"{paths[1].name}/mic_raw.wav" in zf.namelist()
    (paths[1] / "transcript.md").unlink()
    dlg.repair_current()
    assert (paths[1] / "transcript.md").exists() and "Repair:" in dlg.status_label.text()
    assert dlg.delete_current()
    assert not paths[1].exists() and dlg.table.rowCount() == 1


def test_empty_folder(qtbot, tmp_path):
    from app.session_browser import SessionBrowser

    dlg = SessionBrowser(root=tmp_path / "none", player=FakePlayer())
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 0 and dlg.current_session() is None
    assert not dlg.play_stream("mic_raw")
    assert not dlg.play_button.isEnabled()
