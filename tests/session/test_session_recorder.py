"""SessionRecorder on real files: every stream read back with soundfile, alignment, events, transcript, meta."""

from __future__ import annotations

import json
import os
import stat
import time

import numpy as np
import pytest
import soundfile as sf

from _signals import noise, read_jsonl, tone
from core.engine import events as engine_events
from _shared import event
from core.session import SessionRecorder, list_sessions, sessions_root


def _wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return True
        except Exception:  # noqa: BLE001 - the file may not exist yet
            pass
        time.sleep(0.02)
    return cond()


def _conversation(rec: SessionRecorder, seconds: float = 1.0, mic_rate: int = 48_000):
    """10 ms mic blocks with matching clean blocks, playback from 0.5 s, assistant audio and text events."""
    mic = noise(int(seconds * mic_rate), seed=1)
    clean = noise(int(seconds * 16_000), seed=2)
    step_mic, step_clean = mic_rate // 100, 160
    for i in range(int(seconds * 100)):
        rec.write_mic_raw(mic[i * step_mic:(i + 1) * step_mic], mic_rate, t=i * 0.01)
        rec.write_mic_clean(clean[i * step_clean:(i + 1) * step_clean], t=i * 0.01)
    reply = tone(0.3, 24_000, 330)
    rec.write_assistant(reply, 24_000, turn=1, t=0.45)
    rec.write_playback(reply[:3600], 24_000, t=0.5)
    rec.write_playback(reply[3600:], 24_000)          # follows the previous block
    rec.on_event(event("vad_onset", 0.05, 1, {"sample": 800}))
    rec.on_event(event("user_text", 0.3, 1, {"text": "what tim", "partial": True}))
    rec.on_event(event("user_text", 0.35, 1, {"text": "what time", "partial": True}))   # a revised hypothesis
    rec.on_event(event("user_text", 0.4, 1, {"text": " is it", "final": True}))         # a new piece
    rec.on_event(event("turn_decision", 0.4, 1, {"state": "ss", "probs": [0.1, 0.8, 0.1]}))
    rec.on_event(event("assistant_text", 0.45, 1, {"text": "It is "}))
    rec.on_event({"t": 0.46, "turn": 1, "type": "assistant_text", "text": "noon."})
    rec.on_event(event("latency", 0.5, 1, {"first_audio_ms": 120.0, "first_played_ms": 180.5}))
    return mic, clean, reply


def test_streams_round_trip_through_soundfile():
    rec = SessionRecorder(profile="lite", backbone="SmolLM2-135M", voice="joe", settings={"sampling": {"seed": 0}},
                          devices={"input": "pulse"}, sync_interval_s=0.05)
    assert rec.start()
    mic, clean, reply = _conversation(rec)
    rec.close()
    assert rec.path.parent == sessions_root()
    assert rec.path.is_relative_to(os.environ["PARLEY_DATA_DIR"])

    got_mic, rate = sf.read(rec.path / "mic_raw.wav", dtype="float32")
    assert rate == 48_000 and np.array_equal(got_mic, mic)      # float32 WAV: bit exact
    got_clean, rate = sf.read(rec.path / "mic_clean.wav", dtype="float32")
    assert rate == 16_000 and np.array_equal(got_clean, clean)
    got_asst, rate = sf.read(rec.path / "assistant.wav", dtype="float32")
    assert rate == 24_000 and np.array_equal(got_asst, reply)
    got_play, rate = sf.read(rec.path / "playback.wav", dtype="float32")
    # playback sits on the mic timeline: 0.5 s of silence, then the reply
    assert rate == 24_000 and len(got_play) == 12_000 + len(reply)
    assert not got_play[:12_000].any() and np.array_equal(got_play[12_000:], reply)

    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["complete"] is True and meta["profile"] == "lite" and meta["backbone"] == "SmolLM2-135M"
    assert meta["voice"] == "joe" and meta["settings"] == {"sampling": {"seed": 0}}
    assert meta["devices"] == {"input": "pulse"} and meta["parley_version"]
    assert meta["start_time"] and meta["end_time"] and meta["duration_s"] == pytest.approx(1.0)
    streams = meta["streams"]
    assert streams["mic_raw"]["rate"] == 48_000 and streams["mic_raw"]["frames"] == len(mic)
    assert streams["playback"]["mic_offset"] == 0 and streams["playback"]["start_t"] == 0.0
    assert streams["assistant"]["turn_offsets"] == {"1": 0} and streams["assistant"]["on_mic_timeline"] is False

    events = read_jsonl(rec.path / "events.jsonl")
    assert [e["type"] for e in events] == ["vad_onset", "user_text", "user_text", "user_text", "turn_decision", "assistant_text",
                                           "assistant_text", "latency"]
    assert all({"t", "turn", "type"} <= e.keys() for e in events)
    transcript = (rec.path / "transcript.md").read_text()
    assert "what time is it" in transcript and "It is noon." in transcript


def test_headers_are_valid_while_recording():
    """Without close(): each WAV already reads back, up to the last header sync."""
    rec = SessionRecorder(sync_interval_s=0.05)
    rec.start()
    block = tone(0.1, 16_000)
    for i in range(5):
        rec.write_mic_raw(block, 16_000, t=i * 0.1)
    rec.on_event(event("state", 0.0, 0, {"state": "listening"}))
    assert _wait_for(lambda: sf.info(rec.path / "mic_raw.wav").frames == 5 * len(block))
    data, rate = sf.read(rec.path / "mic_raw.wav", dtype="float32")
    assert rate == 16_000 and np.array_equal(data, np.tile(block, 5))
    assert read_jsonl(rec.path / "events.jsonl")[0]["type"] == "state"
    assert json.loads((rec.path / "meta.json").read_text())["complete"] is False
    rec.close()


def test_alignment_by_mic_sample_and_gaps():
    rec = SessionRecorder(sync_interval_s=0.05)
    rec.start()
    rec.write_mic_raw(np.zeros(48_000, np.float32), 48_000, t=2.0)   # the mic timeline starts at session t=2.0
    one = np.ones(480, np.float32)
    rec.write_playback(one, 48_000, mic_sample=960)                     # 20 ms into the mic stream
    rec.write_playback(one, 48_000, mic_sample=4800)                    # gap: silence in between
    rec.write_playback(one, 48_000, mic_sample=5000)                    # overlaps the previous block: trimmed
    rec.write_mic_clean(np.ones(160, np.float32), t=2.5)
    rec.set_stream_info("mic_clean", aec_delay_samples=128)
    rec.close()
    play, _ = sf.read(rec.path / "playback.wav", dtype="float32")
    assert np.flatnonzero(play)[0] == 960 and play[960:1440].all() and not play[1440:4800].any()
    assert play[4800:5480].all() and len(play) == 5480
    clean, _ = sf.read(rec.path / "mic_clean.wav", dtype="float32")
    assert len(clean) == 8_000 + 160 and not clean[:8000].any()
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["streams"]["mic_raw"]["start_t"] == 2.0
    assert meta["streams"]["playback"]["mic_offset"] == 0
    assert meta["streams"]["mic_clean"]["aec_delay_samples"] == 128


def test_permissions_owner_only(tmp_path):
    old = os.umask(0)   # even with a permissive umask
    try:
        rec = SessionRecorder(sync_interval_s=0.05)
        rec.start()
        _conversation(rec, seconds=0.2)
        rec.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(rec.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(rec.path.parent.stat().st_mode) == 0o700
    files = list(rec.path.iterdir())
    assert {f.name for f in files} >= {"mic_raw.wav", "mic_clean.wav", "playback.wav", "assistant.wav",
                                       "events.jsonl", "transcript.md", "meta.json"}
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f.name


def test_explicit_folder_and_refuses_to_overwrite_a_session(tmp_path):
    folder = tmp_path / "chosen" / "my_session"
    rec = SessionRecorder(folder)
    assert rec.start() and rec.path == folder
    rec.close()
    problems = []
    again = SessionRecorder(folder, on_problem=problems.append)
    assert again.start() is False and again.failed
    assert problems and "already holds a session" in problems[0].message
    assert json.loads((folder / "meta.json").read_text())["complete"] is True   # the old session is untouched


def test_attach_to_the_engine_event_bus():
    bus_cls = getattr(engine_events, "EventBus", None)
    if bus_cls is None:
        pytest.skip("core.engine.events.EventBus not there yet")
    bus = bus_cls()
    rec = SessionRecorder(sync_interval_s=0.05)
    rec.start()
    rec.attach(bus)
    bus.publish(event("state", 0.0, 0, {"state": "listening"}))
    bus.publish(event("assistant_text", 0.1, 1, {"text": "hello"}))
    rec.close()                                   # detaches
    bus.publish(event("assistant_text", 0.2, 1, {"text": "late"}))
    events = read_jsonl(rec.path / "events.jsonl")
    assert [e.get("text") for e in events] == [None, "hello"]


def test_list_sessions_reports_size_duration_and_location():
    paths = []
    for seconds in (0.2, 0.5):
        rec = SessionRecorder(sync_interval_s=0.05)
        rec.start()
        rec.write_mic_raw(np.zeros(int(seconds * 16_000), np.float32), 16_000)
        rec.close()
        paths.append(rec.path)
    infos = list_sessions()
    assert {i.path for i in infos} == set(paths)
    by_path = {i.path: i for i in infos}
    assert by_path[paths[1]].duration_s == pytest.approx(0.5)
    for info in infos:
        assert info.size_bytes == sum(f.stat().st_size for f in info.path.iterdir())
        assert info.complete and info.start_time is not None


def test_pushes_never_raise_after_close_or_on_bad_input():
    rec = SessionRecorder()
    rec.write_mic_raw(np.zeros(10), 16_000)     # before start: ignored
    rec.start()
    rec.write_mic_raw("not audio", 16_000)      # logged, ignored
    rec.on_event(object())                      # logged, ignored
    rec.close()
    rec.write_mic_raw(np.zeros(10), 16_000)     # after close: ignored
    rec.on_event(event("state", 1.0, 0))
    assert not rec.failed
