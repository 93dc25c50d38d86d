"""The real app, Lite profile, over the PulseAudio loop (``eval "$(scripts/testenv.sh start)"``): the sink's monitor
is the default source, so what is played into the sink is what the app hears, and what the app plays can be
recorded from the monitor.

One window is shared by the tests of this module (the model loads once); each test starts from "listening".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer

pytestmark = [pytest.mark.ui, pytest.mark.audio, pytest.mark.slow]

SINK = os.environ.get("PARLEY_TEST_SINK", "")


def _loop_available() -> bool:
    if not SINK or not shutil.which("paplay") or not shutil.which("pactl") or not shutil.which("espeak-ng"):
        return False
    return subprocess.run(["pactl", "info"], capture_output=True, timeout=10).returncode == 0


def _lite_installed() -> bool:
    from core.settings.models import lite_missing_packages

    return not lite_missing_packages()


needs_loop = pytest.mark.skipif(not _loop_available(), reason="PulseAudio loop not running (scripts/testenv.sh)")


def say(text: str, path: Path) -> float:
    """espeak-ng WAV of ``text``; returns its duration in seconds."""
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, timeout=30)
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def snapshot(w, name: str, tmp_path: Path) -> Path:
    """A picture of the real app after a real exchange (``PARLEY_E2E_SCREENSHOT_DIR``, else the test's tmp dir):
    how docs/screenshots/live_*.png were made."""
    folder = Path(os.environ.get("PARLEY_E2E_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    img = w.grab()
    assert not img.isNull() and img.save(str(path)), path
    return path


def play(path: Path) -> subprocess.Popen:
    return subprocess.Popen(["paplay", f"--device={SINK}", str(path)])


class MonitorRecorder:
    """Records the sink's monitor (what the speakers would play) with parec."""

    RATE = 16000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(["parec", f"--device={SINK}.monitor", "--format=s16le", f"--rate={self.RATE}",
                                      "--channels=1", "--raw", "--latency-msec=20"],
                                     stdout=open(path, "wb"), stderr=subprocess.DEVNULL)

    def stop(self) -> np.ndarray:
        self.proc.terminate()
        self.proc.wait(5)
        return np.frombuffer(self.path.read_bytes(), dtype=np.int16).astype(np.float32) / 32768.0

    def rms(self, audio: np.ndarray, t_from: float, t_to: float) -> float:
        """RMS between two monotonic times (approximate: parec's start-up delay is ignored)."""
        a = int(max(0.0, t_from - self.t0) * self.RATE)
        b = int(max(0.0, t_to - self.t0) * self.RATE)
        seg = audio[a:b]
        return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0


@pytest.fixture(scope="module")
def live_window(qapp, tmp_path_factory):
    if not _loop_available():
        pytest.skip("PulseAudio loop not running (scripts/testenv.sh start)")
    if not _lite_installed():
        pytest.skip("Lite weight packages not installed")
    from app.main_window import MainWindow
    from core.settings import Settings

    cfg = tmp_path_factory.mktemp("e2e-config")
    old = os.environ.get("PARLEY_CONFIG_DIR")
    os.environ["PARLEY_CONFIG_DIR"] = str(cfg)
    s = Settings()
    s.sampling.greedy = True
    s.sampling.max_new_tokens = 60
    s.persona.system_prompt = "You are a helpful assistant. Answer in English."
    w = MainWindow(s)
    w.resize(1100, 700)
    w.show()
    w.start_engine(listen=True)
    deadline = time.monotonic() + 180
    _wait(qapp, max(1.0, deadline - time.monotonic()),
          lambda: bool(w.profile_loaded and w.listening and w.state == "listening"))
    assert w.profile_loaded == "lite" and w.listening, [t for t in w.notices.history]
    # As a user does, speak once the badge says "Listening": the first input callback can come ~2 s after start,
    # and the ready sound plays once the echo reference's alignment has settled; until it is over, "Getting ready".
    audio = getattr(w.worker.stack, "audio", None)
    assert audio is not None and audio.config.ready_sound
    seen: list[tuple[int, str]] = []
    assert _wait(qapp, 25.0, lambda: seen.append((audio.ready_sounds, w.panel.badge.state)) or
                 w.panel.badge.state == "listening"), f"the badge never said Listening: {seen[-1:]}"
    assert audio.ready_sounds >= 1, "Listening was shown, but the ready sound never played"
    assert all(badge != "listening" for n, badge in seen if n == 0), "Listening was shown before the ready sound"
    _wait(qapp, 0.3)
    yield w
    w.close()
    assert w.wait_shut_down(60_000)
    if old is None:
        os.environ.pop("PARLEY_CONFIG_DIR", None)
    else:
        os.environ["PARLEY_CONFIG_DIR"] = old


def _wait(qapp, seconds: float, until=None) -> bool:
    """Run the real Qt event loop (as exec() does) for ``seconds`` or until ``until()`` is true."""
    from PySide6.QtCore import QEventLoop

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: loop.quit() if until is not None and until() else None)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    check.start()
    deadline.start(int(seconds * 1000))
    if until is None or not until():
        loop.exec()
    check.stop()
    deadline.stop()
    return until() if until is not None else True


def _back_to_listening(qapp, w, timeout: float = 60.0) -> None:
    assert _wait(qapp, timeout, lambda: w.state == "listening"), f"state {w.state}"
    _wait(qapp, 1.0)


def _new_assistant_entries(w, before: int):
    return [e for e in w.transcript.order[before:] if e.data.role == "assistant"]


@needs_loop
def test_spoken_question_is_transcribed_answered_and_heard(qapp, live_window, tmp_path):
    w = live_window
    n0 = len(w.transcript.order)
    states0 = len(w.states_seen)
    lat0 = len(w.latency_values())
    mic_levels: list[float] = []
    w.event_handled.connect(lambda ev: mic_levels.append(ev.get("mic_db", -120.0))
                            if getattr(ev, "type", "") == "meter" else None)
    dur = say("What is the capital of France?", tmp_path / "q.wav")
    rec = MonitorRecorder(tmp_path / "monitor.raw")
    _wait(qapp, 0.5)
    p = play(tmp_path / "q.wav")
    played_at = time.monotonic()
    assert _wait(qapp, 90, lambda: any(e.data.committed for e in _new_assistant_entries(w, n0))
                 and w.state == "listening" and "speaking" in w.states_seen[states0:])
    p.wait(10)
    question_end = played_at + dur
    audio = rec.stop()
    users = [e for e in w.transcript.order[n0:] if e.data.role == "user"]
    assert users and "capital" in users[0].data.text.lower() and users[0].data.final
    answer = _new_assistant_entries(w, n0)[0]
    assert answer.data.committed.strip()
    seq = w.states_seen[states0:]
    for st in ("user_speaking", "thinking", "speaking", "listening"):
        assert st in seq, seq
    assert seq.index("user_speaking") < seq.index("thinking") < seq.index("speaking")
    # the answer was played into the sink: sound after the question ended (nothing else plays then)
    assert rec.rms(audio, question_end + 0.3, time.monotonic()) > 0.003
    assert len(w.latency_values()) > lat0 and answer.data.latency_ms is not None
    assert "latency last" in w.panel.latency_label.text()
    # the panel saw the state head / VAD probabilities and live levels
    assert w.panel.chart.samples["p_cl"] or w.panel.chart.samples["vad"]
    assert mic_levels and max(mic_levels) > -40, "the mic meter must have seen the spoken question"
    # a one-clause answer is queued whole: its end is no gap in playback (the engine tells the player it is done)
    assert not [t for t in w.notices.texts() if "starved" in t], w.notices.texts()
    snapshot(w, "live_lite_answered", tmp_path)


@needs_loop
def test_escape_during_an_answer_stops_it_and_marks_the_unheard_text(qapp, live_window, tmp_path):
    w = live_window
    _back_to_listening(qapp, w)
    n0 = len(w.transcript.order)
    states0 = len(w.states_seen)
    say("Tell me a long story about a dragon and a knight.", tmp_path / "q2.wav")
    rec = MonitorRecorder(tmp_path / "monitor2.raw")
    p = play(tmp_path / "q2.wav")
    assert _wait(qapp, 90, lambda: "speaking" in w.states_seen[states0:]), w.states_seen[states0:]
    p.wait(10)
    _wait(qapp, 0.4)
    w.activateWindow()
    w.setFocus()
    from PySide6.QtTest import QTest

    QTest.keyClick(w, Qt.Key.Key_Escape)
    esc_at = time.monotonic()
    assert _wait(qapp, 10, lambda: "interrupted" in w.states_seen[states0:]), w.states_seen[states0:]
    _wait(qapp, 1.5)
    audio = rec.stop()
    answer = _new_assistant_entries(w, n0)[0]
    assert answer.data.interrupted
    assert answer.data.unheard, "an answer cut after ~0.4 s must have unheard text"
    assert "<s " in answer.body.text()
    # the sink goes quiet soon after Esc (flush within ~100 ms + device latency)
    assert rec.rms(audio, esc_at + 0.5, esc_at + 1.4) < 0.002
    snapshot(w, "live_lite_interrupted", tmp_path)
    _back_to_listening(qapp, w)


@needs_loop
def test_bad_backbone_folder_is_refused_and_lite_keeps_answering(qapp, live_window, tmp_path):
    w = live_window
    _back_to_listening(qapp, w)
    bad = w.settings.copy()
    bad.model.profile = "freeze-omni"
    bad.model.checkpoint_dir = str(tmp_path / "no-checkpoints")
    bad.model.backbone_dir = str(tmp_path)          # exists, but is no model folder
    w.apply_settings(bad)
    assert _wait(qapp, 20, lambda: any("cannot load the freeze-omni profile" in t for t in w.notices.texts()))
    msg = [t for t in w.notices.texts() if "freeze-omni" in t][0]
    assert "no config.json" in msg and "Still using lite" in msg
    assert w.worker.active_settings.model.profile == "lite" and w.listening
    # the old profile still works
    n0 = len(w.transcript.order)
    say("Hello, how are you today?", tmp_path / "q3.wav")
    play(tmp_path / "q3.wav").wait(15)
    assert _wait(qapp, 90, lambda: any(e.data.committed for e in _new_assistant_entries(w, n0))
                 and w.state == "listening")
    # put the working settings back
    w.settings.model.profile = "lite"
