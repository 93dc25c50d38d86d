"""LiveRecording: AudioIO-style chunks (placed by their 16 kHz position) and the tee sink, on real files."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import soundfile as sf

from core.engine.clock import WallClock
from core.session.livetap import LiveRecording
from core.session.recorder import SessionRecorder


class _Sink:
    def __init__(self):
        self.got = []

    def enqueue(self, samples, rate, tag):
        self.got.append((len(samples), rate, tag))

    def flush(self):
        return "flushed"

    def played_samples(self, tag):
        return 7

    def pending_seconds(self):
        return 0.5

    def first_play_time(self, tag):
        return 1.25


def _chunk(start, value, t_start):
    n = 2560
    return SimpleNamespace(start=start, t_start=t_start, samples_16k=np.full(n, value, np.float32),
                           raw_16k=np.full(n, value + 0.1, np.float32), reference_16k=np.full(n, -value, np.float32))


def test_chunks_land_on_one_timeline_and_a_dropped_chunk_is_silence(tmp_path):
    clock = WallClock()
    rec = SessionRecorder(tmp_path / "live", sync_interval_s=0.05)
    rec.start()
    tap = LiveRecording(rec, clock=clock, reference_lead_ms=30.0)
    t0 = time.monotonic()
    tap.on_chunk(_chunk(1000, 0.1, t0))          # the audio layer's stream position need not start at 0
    tap.on_chunk(_chunk(1000 + 2560, 0.2, t0 + 0.16))
    tap.on_chunk(_chunk(1000 + 3 * 2560, 0.3, t0 + 0.48))   # chunk 3 was dropped
    sink = tap.wrap_sink(_Sink())
    sink.enqueue(np.zeros(240, np.float32), 24_000, 4)
    assert sink.played_samples(4) == 7 and sink.pending_seconds() == 0.5 and sink.first_play_time(4) == 1.25
    assert sink.flush() == "flushed"
    rec.close()
    raw, rate = sf.read(rec.path / "mic_raw.wav", dtype="float32")
    clean, _ = sf.read(rec.path / "mic_clean.wav", dtype="float32")
    play, _ = sf.read(rec.path / "playback.wav", dtype="float32")
    assert rate == 16_000 and len(raw) == len(clean) == len(play) == 4 * 2560
    for k, v in enumerate((0.1, 0.2, 0.0, 0.3)):
        part = slice(k * 2560, (k + 1) * 2560)
        assert np.allclose(clean[part], v) and np.allclose(play[part], -v)
        assert np.allclose(raw[part], v + 0.1 if v else 0.0)
    asst, arate = sf.read(rec.path / "assistant.wav")
    assert arate == 24_000 and len(asst) == 240
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["streams"]["playback"]["reference_lead_ms"] == 30.0
    assert meta["streams"]["mic_clean"]["mic_offset"] == 0
    assert abs(meta["streams"]["mic_raw"]["start_t"]) < 0.5      # session time of mic sample 0
    assert meta["streams"]["assistant"]["turn_offsets"] == {"4": 0}


def test_muted_chunks_are_recorded_as_silence(tmp_path):
    rec = SessionRecorder(tmp_path / "muted")
    rec.start()
    tap = LiveRecording(rec)
    tap.on_chunk(_chunk(0, 0.1, 0.0))
    tap.on_chunk(_chunk(2560, 0.2, 0.0), muted=True)
    rec.close()
    raw, _ = sf.read(rec.path / "mic_raw.wav", dtype="float32")
    clean, _ = sf.read(rec.path / "mic_clean.wav", dtype="float32")
    play, _ = sf.read(rec.path / "playback.wav", dtype="float32")
    assert raw[:2560].all() and not raw[2560:].any() and not clean[2560:].any()
    assert np.allclose(play[2560:], -0.2)       # the assistant's side is still there
