"""The event bus, the JSONL writer, the virtual-clock sink and the heard-text alignment (engine parts, no model)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from core.engine.alignment import ReplyTranscript, finish_transcript
from core.engine.backend import ReplyPiece
from core.engine.clock import VirtualClock
from core.engine.events import EventBus, InfoEvent, JsonlWriter, read_jsonl
from core.engine.sink import VirtualAudioSink


def test_bus_many_subscribers_threads_and_a_broken_one(tmp_path):
    clock = VirtualClock()
    bus = EventBus(clock)
    seen_a, seen_b = [], []
    bus.subscribe(seen_a.append)
    bus.subscribe(lambda ev: 1 / 0)          # a broken subscriber is logged, never breaks emit
    queue = bus.subscribe_queue(maxsize=50)
    writer = JsonlWriter(tmp_path / "ev.jsonl")
    sub_w = bus.subscribe(writer)
    sub_b = bus.subscribe(seen_b.append)

    def emitter(k: int) -> None:
        for i in range(100):
            bus.emit(InfoEvent(turn=k, message=f"message {i}"))

    threads = [threading.Thread(target=emitter, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert len(seen_a) == len(seen_b) == 400
    assert len(queue) == 50 and queue.dropped == 350      # bounded: the oldest are dropped
    sub_b.close()
    bus.emit(InfoEvent(turn=9))
    assert len(seen_b) == 400 and len(seen_a) == 401
    # The JSONL file is flushed line by line: readable while still open.
    lines = (tmp_path / "ev.jsonl").read_text().splitlines()
    assert len(lines) == 401
    first = json.loads(lines[0])
    assert set(first) >= {"t", "turn", "type"}
    sub_w.close()
    writer.close()
    assert len(read_jsonl(tmp_path / "ev.jsonl")) == 401
    assert queue.get(timeout=0.01) is not None


def test_virtual_sink_plays_at_real_rate_and_flush_reports_what_was_played():
    clock = VirtualClock()
    out = []
    sink = VirtualAudioSink(clock, 24_000, writer=out.append)
    clock.set(1.0)
    sink.enqueue(np.full(24_000, 0.5, np.float32), 24_000, tag=1)     # 1 s of audio handed over at t = 1.0
    assert sink.pending_seconds() == pytest.approx(1.0)
    clock.set(1.25)
    sink.advance()
    assert sink.played_samples(1) == 6_000
    assert sink.first_play_time(1) == pytest.approx(1.0)
    report = sink.flush()
    assert report.played_samples[1] == 6_000
    assert report.dropped_samples == 18_000
    clock.set(2.0)
    sink.advance()
    assert sink.played_samples(1) == 6_000 and sink.pending_seconds() == 0
    timeline = np.concatenate(out)
    assert len(timeline) == 48_000                       # the output covers the timeline from t = 0
    assert np.all(timeline[:24_000] == 0)                # silence before the answer
    assert np.all(timeline[24_000:30_000] == 0.5)
    fade = timeline[30_000:30_240]                       # 10 ms fade-out, no click
    assert fade[0] <= 0.5 and fade[-1] == pytest.approx(0.0, abs=1e-6)
    assert np.all(timeline[30_240:] == 0)


def test_virtual_sink_resamples_and_counts_at_the_source_rate():
    clock = VirtualClock()
    sink = VirtualAudioSink(clock, 24_000)
    sink.enqueue(np.zeros(22_050, np.float32), 22_050, tag=3)
    clock.set(0.5)
    sink.advance()
    assert abs(sink.played_samples(3) - 11_025) <= 2


def _piece(text="", n=0, end=False):
    return ReplyPiece(text=text, audio=np.zeros(n, np.float32) if n else None, segment_end=end)


def test_heard_text_follows_played_samples_per_segment_and_cuts_at_words():
    tr = ReplyTranscript(rate=1000)
    for p in (_piece("Paris is "), _piece("the capital,"), _piece(n=1000), _piece(n=1000, end=True),
              _piece(" and it is big."), _piece(n=1500, end=True), _piece(" More text")):
        tr.add(p)
    assert tr.heard_text(0) == ""
    assert tr.heard_text(2000) == "Paris is the capital,"
    # Half-way through the first segment: "Paris is the capital," has 21 chars; 50 % = 10 chars -> "Paris is "
    assert tr.heard_text(1000) == "Paris is "
    assert tr.heard_text(1001) == "Paris is "
    assert tr.heard_text(3500) == "Paris is the capital, and it is big."
    assert tr.unheard_text(3500) == " More text"
    assert tr.spoken_text() == "Paris is the capital, and it is big."
    finish_transcript(tr)
    assert tr.heard_text(3500) == tr.text           # the trailing text-only segment is now complete


def test_heard_text_of_a_segment_whose_audio_is_still_arriving_is_estimated_from_its_text():
    tr = ReplyTranscript(rate=1400)                 # default 14 chars/s -> 100 samples per char
    tr.add(_piece("one two three four five six seven eight nine ten."))
    tr.add(_piece(n=1000))                          # first audio window of the segment only
    heard = tr.heard_text(1000)                     # all audio so far played, but the segment is 4900 samples long
    assert heard.startswith("one") and len(heard) < 20


def test_any_wav_is_read_as_16k_mono(tmp_path):
    import soundfile as sf

    from core.engine.filemode import load_wav_16k

    t = np.arange(44_100 * 2) / 44_100
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1).astype(np.float32)
    sf.write(str(tmp_path / "in.wav"), stereo, 44_100, subtype="PCM_16")
    x = load_wav_16k(tmp_path / "in.wav")
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 32_000) <= 2
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16_000 / len(x) - 440) < 2


def test_chat_reports_a_missing_input_in_one_line(tmp_path, capsys):
    from core.cli import main

    code = main(["chat", "--profile", "lite", "--input", str(tmp_path / "missing.wav"),
                 "--output", str(tmp_path / "o.wav"), "--events", str(tmp_path / "e.jsonl")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input file not found" in err[0]
