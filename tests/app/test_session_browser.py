"""The session browser, offscreen: lists sessions, shows the timeline and transcript, plays streams, exports,
repairs and deletes.

Playback uses the browser's own player (sounddevice on the default output). The ``audio`` tests route this
process's streams to a private null sink on the PulseAudio loop (``eval "$(scripts/testenv.sh start)"``) and record
its monitor with ``parec``: what the browser plays must really arrive there, from the right place in the file, and
stop must really silence it. They are skipped when the loop is not running; the others need no audio device."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import zipfile  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from _loop import private_loop  # noqa: E402
from _monitor import Monitor, sound  # noqa: E402
from _shared import event  # noqa: E402
from core.session.recorder import SessionRecorder  # noqa: E402

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def private_sink():
    """A private null sink on the PulseAudio loop; this process's new output streams (the browser's player) go to
    it while the module runs, so other programs on the shared test sink neither disturb nor hear these tests."""
    yield from private_loop("browser", "parec")


@pytest.fixture
def monitor(private_sink, tmp_path):
    m = Monitor(private_sink.monitor, tmp_path / "monitor.raw")
    yield m
    m.close()


def _record(root, seconds, name):
    rec = SessionRecorder(root / name, profile="lite", sync_interval_s=0.05)
    rec.start()
    ramp = np.linspace(0, 0.5, int(seconds * 16_000), dtype=np.float32)
    rec.write_mic_raw(ramp, 16_000, t=0.0)
    rec.write_mic_clean(ramp, t=0.0)
    rec.write_playback(np.full(2400, 0.25, np.float32), 24_000, t=0.5)
    rec.write_assistant(np.full(2400, 0.25, np.float32), 24_000, turn=1)
    for ev in (event("state", 0.0, 0, {"state": "listening"}),
               event("levels", 0.1, 0, {"vad": 0.1}),
               event("user_text", 0.2, 1, {"text": "hello browser", "final": True}),
               event("turn_decision", 0.3, 1, {"state": "ss"}),
               event("assistant_text", 0.4, 1, {"text": "Hello tester."})):
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
    dlg = SessionBrowser(root=root)
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


def _listen(qtbot, monitor: Monitor, since: int, seconds: float) -> np.ndarray:
    """Keep the event loop running for ``seconds``; what the sink played from ``since`` on."""
    qtbot.wait(int(seconds * 1000))
    return monitor.audio(since)


@pytest.mark.audio
def test_plays_streams_non_blocking_from_a_timeline_event(qtbot, sessions, monitor):
    from PySide6.QtCore import Qt

    from app.session_browser import SessionBrowser

    root, paths = sessions
    dlg = SessionBrowser(root=root)                 # its own player: sounddevice on the default output
    qtbot.addWidget(dlg)
    dlg.select_session(paths[0])
    assert sound(monitor.audio()) is None          # nothing plays before Play
    # "playback" (24 kHz): 0.5 s of silence, then 0.1 s at 0.25, played from the start of the file
    dlg.stream_combo.setCurrentIndex(dlg.available_streams().index("playback"))
    mark = monitor.mark()
    with qtbot.waitSignal(dlg.playbackStarted) as sig:
        qtbot.mouseClick(dlg.play_button, Qt.MouseButton.LeftButton)
    import sounddevice as sd

    assert sd.get_stream().active                       # non-blocking: the click returned while the sound plays
    assert sig.args == ["playback", 0.0] and "(0.6 s)" in dlg.status_label.text()
    heard = sound(_listen(qtbot, monitor, mark, 1.2))
    assert heard is not None, "nothing reached the sink"
    onset, duration, level, _, _ = heard
    assert 0.4 <= onset <= 1.0 and 0.03 <= duration <= 0.2 and level == pytest.approx(0.25, abs=0.04)
    # double-click the user_text event at t=0.2: the mic stream (16 kHz ramp 0 -> 0.5 over 1 s) plays from there
    dlg.stream_combo.setCurrentIndex(dlg.available_streams().index("mic_raw"))
    row = [r[2] for r in dlg.timeline_rows()].index("user_text")
    mark = monitor.mark()
    with qtbot.waitSignal(dlg.playbackStarted) as sig:
        dlg._timeline_double_clicked(row, 0)
    assert sig.args == ["mic_raw", pytest.approx(0.2)] and "(0.8 s)" in dlg.status_label.text()
    heard = sound(_listen(qtbot, monitor, mark, 1.5))
    assert heard is not None, "nothing reached the sink"
    onset, duration, first, last, peak = heard
    assert 0.6 <= duration <= 0.9                       # the 0.8 s after t=0.2, not the whole second
    assert first == pytest.approx(0.1, abs=0.04)        # the ramp's value at 0.2 s
    assert last == pytest.approx(0.5, abs=0.06) and peak < 0.56


@pytest.mark.audio
def test_stop_silences_the_sink(qtbot, sessions, monitor):
    from app.session_browser import SessionBrowser

    root, paths = sessions
    dlg = SessionBrowser(root=root)
    qtbot.addWidget(dlg)
    dlg.select_session(paths[1])                       # mic_raw: 2 s ramp 0 -> 0.5
    mark = monitor.mark()
    assert dlg.play_stream("mic_raw")
    qtbot.wait(700)
    dlg.stop_playback()
    assert dlg.status_label.text() == "Stopped."
    stopped = monitor.mark()
    after = _listen(qtbot, monitor, stopped, 0.8)
    heard = sound(monitor.audio(mark))
    assert heard is not None and heard[4] > 0.05, "nothing reached the sink before stop"
    assert heard[4] < 0.35                              # cut well before the ramp's end (0.5 at 2 s)
    assert np.abs(after[Monitor.RATE // 10:]).max() < 0.005    # silent from 0.1 s after stop on
    # after a stop it plays again, and a new play replaces the one running (no mix of both, no rest of the first)
    assert dlg.play_stream("mic_raw")
    qtbot.wait(400)
    mark = monitor.mark()
    assert dlg.play_stream("mic_raw", start_s=1.6)     # the ramp's last 0.4 s: 0.4 -> 0.5
    second = _listen(qtbot, monitor, mark, 1.3)
    heard = sound(second)
    assert heard is not None and heard[4] < 0.56       # never the two ramps summed
    loud = np.flatnonzero(np.abs(second) > 0.3)
    assert len(loud) and 0.25 <= (loud[-1] - loud[0]) / Monitor.RATE <= 0.5   # the last 0.4 s, once
    assert np.abs(second[int(0.95 * Monitor.RATE):]).max() < 0.005   # the first ramp (2 s) did not go on


def test_export_repair_delete(qtbot, sessions, tmp_path):
    from app.session_browser import SessionBrowser

    root, paths = sessions
    dlg = SessionBrowser(root=root)
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

    dlg = SessionBrowser(root=tmp_path / "none")
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 0 and dlg.current_session() is None
    assert not dlg.play_stream("mic_raw")
    assert not dlg.play_button.isEnabled()
