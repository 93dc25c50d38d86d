"""The sound server is killed and comes back: AudioIO keeps retrying with a growing pause while it runs, comes back
by itself when the server returns, and says what is happening (issue 15, item 12).

A private PulseAudio daemon (``tests/audio/_pulse_private.py``) carries this process's streams; it is killed and
started again on the same socket, which is what a crashed or restarted sound server looks like to Parley.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audio"))   # the private PulseAudio helper

pytestmark = pytest.mark.audio


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def private_pulse():
    from core.audio.loopback import START_HINT, pulse_loop_problem

    problem = pulse_loop_problem()
    if problem is not None:
        _unavailable(f"PulseAudio is not available: {problem}; {START_HINT}")
    from _pulse_private import PrivatePulse

    private = PrivatePulse().start()
    private.route_here()          # every stream of this process (and every re-open) goes to the private server
    yield private
    private.stop()


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class Events:
    """Every event AudioIO reports, in order (a listener: nothing is consumed from the queue)."""

    def __init__(self) -> None:
        self.items = []
        self.cond = threading.Condition()

    def __call__(self, event) -> None:
        with self.cond:
            self.items.append(event)
            self.cond.notify_all()

    def wait(self, predicate, timeout: float):
        with self.cond:
            ok = self.cond.wait_for(lambda: any(predicate(e) for e in self.items), timeout)
            return next((e for e in self.items if predicate(e)), None) if ok else None

    def codes(self) -> list[str]:
        with self.cond:
            return [e.code for e in self.items]


def test_audio_comes_back_after_the_sound_server_is_killed_and_restarted(private_pulse):
    """The app's live stack (the tiny Freeze-Omni model) on the private server: the user is told the microphone is
    gone, AudioIO keeps retrying, and when the server is back the user is told so and chunks flow again."""
    from _hostile import fixture
    from core.audio.events import AUDIO_STATUS, WARNING
    from core.compose.live import LiveStack
    from core.engine.events import InfoEvent, WarningEvent
    from core.settings import Settings

    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir, s.model.backbone_dir = str(fixture()), str(fixture() / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    stack = LiveStack(s)
    notices = Events()
    stack.subscribe(lambda ev: notices(ev) if isinstance(ev, (WarningEvent, InfoEvent)) else None)
    events = Events()
    try:
        stack.start_listening()
        io = stack.audio
        io.events.subscribe(events)
        assert io.wait_running(15.0)
        player = io.player                      # what the engine plays into
        private_pulse.kill()
        lost = events.wait(lambda e: e.code == "device_lost", 10.0)
        assert lost is not None and lost.type == WARNING
        assert "is gone" in lost.message and "retrying" in lost.message, lost.message
        told = notices.wait(lambda e: isinstance(e, WarningEvent) and e.code == "device_lost", 5.0)
        assert told is not None and told.source == "audio" and told.message == lost.message
        # it keeps trying well past the three attempts that used to end in silence, with a growing pause
        assert events.wait(lambda e: events.codes().count("reconnecting") >= 5, 60.0), events.codes()
        pauses = [e.data["next_retry_s"] for e in events.items if e.code == "reconnecting"]
        assert pauses == sorted(pauses) and pauses[0] < pauses[-1] <= io.config.reopen_backoff_max_s, pauses
        assert io.state == "recovering" and io.running and "stopped" not in events.codes()
        private_pulse.restart()
        back = events.wait(lambda e: e.code in ("reopened", "stopped"), 30.0)
        back_at = stack.chunks_in
        assert back is not None and back.code == "reopened" and back.type == AUDIO_STATUS, events.codes()
        assert back.message.startswith("Audio is back"), back.message
        told = notices.wait(lambda e: isinstance(e, InfoEvent) and e.kind == "audio_back", 5.0)
        assert told is not None and told.notify and told.message == back.message
        assert io.player is player and "playback_reset" not in events.codes()   # the engine's sink still plays
        assert io.wait_running(15.0)
        assert wait_until(lambda: stack.chunks_in > back_at + 10, 20.0), "no audio after the server came back"
    finally:
        stack.close()


def test_stop_while_retrying_ends_the_retries(private_pulse):
    from core.audio.audio_io import AudioConfig, AudioIO

    events = Events()
    io = AudioIO(AudioConfig(), on_chunk=lambda c: None)
    io.events.subscribe(events)
    io.start()
    try:
        assert io.wait_running(15.0)
        private_pulse.kill()
        assert events.wait(lambda e: e.code == "reconnecting", 20.0) is not None
    finally:
        worker = io._worker
        io.stop(timeout=6.0)
    assert worker is not None and not worker.is_alive()
    assert io.state == "stopped" and not io.running
    count = events.codes().count("reconnecting")
    private_pulse.restart()                # nothing re-opens after stop()
    assert events.wait(lambda e: e.code == "reopened", 3.0) is None
    assert events.codes().count("reconnecting") == count
