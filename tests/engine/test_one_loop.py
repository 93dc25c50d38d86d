"""The one live loop: capture time travels with every chunk, so latency is measured from when the user's speech
was captured, however late its chunk is processed; typed events and their JSONL form.

The backend is the real Freeze-Omni backend on the tiny fixture (random weights, greedy: deterministic)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from _shared import chunks, default_fixture, fixture_spec
from core.engine.conversation import Placed, mix

FIXTURE = default_fixture()
needs_fixture = pytest.mark.skipif(not (FIXTURE / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")


@pytest.fixture(scope="module")
def fo_backend():
    from core.compose.build import build_backend

    backend = build_backend(fixture_spec())
    yield backend
    backend.close()


def _drive(backend, lag_s: float) -> list:
    """Chunks captured every 160 ms but each handed to the engine ``lag_s`` late (a busy machine, a full queue)."""
    from core.engine.clock import VirtualClock
    from core.engine.engine import Engine
    from core.engine.events import EventBus
    from core.engine.sink import VirtualAudioSink

    audio, _ = sf.read(str(FIXTURE / "input.wav"), dtype="float32")
    clock = VirtualClock()
    bus = EventBus(clock)
    seen = bus.subscribe_queue(100_000)
    engine = Engine(backend, VirtualAudioSink(clock, backend.output_rate), bus=bus)
    engine.start()
    for k, chunk in enumerate(chunks(mix([Placed(0.3, audio)], tail_s=3.0))):
        clock.set(chunk.t_start + 0.16 + lag_s)      # processed lag_s after its audio ended
        engine.process_chunk(chunk)
        while engine.wants_speak_step():
            engine.speak_step()
    return seen.drain()


@needs_fixture
def test_a_chunk_queued_late_still_yields_the_capture_time_end_of_speech(fo_backend):
    on_time = [e for e in _drive(fo_backend, 0.0) if e.type == "latency"]
    late = [e for e in _drive(fo_backend, 1.0) if e.type == "latency"]
    assert on_time and len(late) == len(on_time)
    for a, b in zip(on_time, late):
        # the end of speech is the capture time, so the second of queueing shows up in every figure
        assert b.decision_ms == pytest.approx(a.decision_ms + 1000.0, abs=1.0)
        assert b.first_audio_ms == pytest.approx(a.first_audio_ms + 1000.0, abs=1.0)


@needs_fixture
def test_the_live_stack_hands_chunks_on_with_their_capture_time_on_the_session_clock():
    from core.audio.interfaces import AudioChunk
    from core.compose.live import LiveStack
    from core.engine.engine import QueueChunkSource
    from core.settings import Settings

    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir, s.model.backbone_dir = str(FIXTURE), str(FIXTURE / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    stack = LiveStack(s)
    try:
        stack._source = QueueChunkSource()
        captured = time.monotonic() - 2.0          # AudioIO's capture estimate: time.monotonic() of sample 0
        stack._on_chunk(AudioChunk(np.zeros(2560, np.float32), start=0, t_start=captured,
                                   vad_probs=np.zeros(5, np.float32)))
        got = stack._source.read(0.0)
        assert got.t_start == pytest.approx(stack.clock.now() - 2.0, abs=0.05)
    finally:
        stack.close()


def test_every_event_class_round_trips_through_its_jsonl_form():
    from core.engine.events import EVENT_CLASSES, MeterLevels, StateProbs, UnknownEvent, event_from_dict

    for cls in EVENT_CLASSES:
        ev = cls(t=1.5, turn=3)
        back = event_from_dict(ev.to_dict())
        assert type(back) is cls and back == ev, cls
    # fields of another version are kept and written back; unknown types too
    ev = event_from_dict({"type": "state_probs", "t": 0.2, "turn": 1, "probs": [0.1, 0.8, 0.1], "state": "ss",
                          "future_field": 7})
    assert isinstance(ev, StateProbs) and ev.probs == (0.1, 0.8, 0.1) and ev.get("future_field") == 7
    assert ev.to_dict()["future_field"] == 7
    odd = event_from_dict({"type": "from_the_future", "t": 1.0, "turn": 2, "x": 1})
    assert isinstance(odd, UnknownEvent) and odd.to_dict() == {"type": "from_the_future", "t": 1.0, "turn": 2, "x": 1}
    # a field of the wrong type is kept aside, not lost, and the event still reads
    meter = event_from_dict({"type": "meter", "t": 0.0, "turn": 0, "mic_db": "loud"})
    assert isinstance(meter, MeterLevels) and meter.mic_db == -120.0 and meter.get("mic_db") == -120.0
    assert meter.extra["mic_db"] == "loud"
    with pytest.raises(ValueError):
        event_from_dict({"t": 0.0, "turn": 0})
