"""Crash safety (SIGKILL), repair, disk full / unwritable folders, retention and export."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _signals import read_jsonl, tone
from _shared import event
from core.engine.events import EventBus
from core.session import SessionRecorder, apply_retention, export_session, list_sessions, repair_session
from core.session.wavfile import FORMAT_PCM16, StreamingWavWriter, repair_wav_header

HERE = Path(__file__).resolve().parent
WORKER = HERE / "_record_worker.py"
WAVS = ("mic_raw.wav", "mic_clean.wav", "playback.wav", "assistant.wav")


def _start_worker(folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(folder), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _recorded_seconds(folder: Path) -> dict[str, float]:
    return {name: sf.info(folder / name).duration for name in WAVS}


# ---------------------------------------------------------------------------------------------- the WAV writer


@pytest.mark.parametrize("fmt,channels", [("float32", 1), ("pcm16", 1), ("float32", 2), ("pcm16", 2)])
def test_streaming_wav_writer_formats(tmp_path, fmt, channels):
    path = tmp_path / "x.wav"
    data = tone(0.5, 22_050) if channels == 1 else np.stack([tone(0.5, 22_050), tone(0.5, 22_050, 220)], 1)
    w = StreamingWavWriter(path, 22_050, channels, fmt, sync_interval_s=0.0)
    for i in range(0, len(data), 1000):
        w.write(data[i:i + 1000])
        assert sf.info(path).frames == min(i + 1000, len(data))   # header synced after every write
    w.close()
    back, rate = sf.read(path, dtype="float32")
    assert rate == 22_050 and back.shape == data.shape
    tol = 0 if fmt == "float32" else 1 / 32767
    assert np.max(np.abs(back - data)) <= tol
    info = sf.info(path)
    assert info.subtype == ("FLOAT" if fmt == "float32" else "PCM_16") and info.channels == channels


def test_header_never_claims_unsynced_data_and_repair_recovers_it(tmp_path):
    path = tmp_path / "x.wav"
    w = StreamingWavWriter(path, 16_000, sync_interval_s=3600.0, sample_format=FORMAT_PCM16)
    w.write(np.full(1600, 0.5, np.float32))
    w.sync()
    w.write(np.full(800, 0.5, np.float32))          # not synced: like a kill right now
    os.close(w._fd)                                  # abandon without close(): what SIGKILL leaves
    assert sf.info(path).frames == 1600              # readable, ends at the last sync
    with open(path, "ab") as f:
        f.write(b"\x01")                             # a torn half frame at the end
    fix = repair_wav_header(path)
    assert fix.changed and fix.claimed_frames == 1600 and fix.frames == 2400
    back, _ = sf.read(path, dtype="float32")
    assert len(back) == 2400 and np.allclose(back, 0.5, atol=1e-4)
    assert repair_wav_header(path).changed is False  # idempotent


# ---------------------------------------------------------------------------------------------- SIGKILL + repair


def test_sigkill_mid_session_leaves_readable_consistent_files_and_repair_completes_them(tmp_path):
    folder = tmp_path / "killed"
    proc = _start_worker(folder, "--seconds", "30")
    try:
        line = proc.stdout.readline()
        assert "ready" in line, proc.stderr.read()
        time.sleep(0.6)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # every file is readable as it was left
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["complete"] is False and meta["streams"]["mic_raw"]["rate"] == 48_000
    events = read_jsonl(folder / "events.jsonl")      # every line parses: events go out line by line
    assert events and events[0]["type"] == "turn_decision"
    seconds = _recorded_seconds(folder)
    for name in WAVS:
        data, _ = sf.read(folder / name, dtype="float32")
        assert len(data) > 0, name
    # consistent with each other: the mic streams end within a few header-sync intervals of each other
    assert abs(seconds["mic_raw.wav"] - seconds["mic_clean.wav"]) < 0.25
    assert abs(seconds["mic_raw.wav"] - seconds["playback.wav"]) < 0.25
    assert (folder / "transcript.md").read_text().startswith("# Parley session")

    report = repair_session(folder)
    assert report.ok, report.problems
    after = _recorded_seconds(folder)
    for name in WAVS:
        assert after[name] >= seconds[name]
    assert abs(after["mic_raw.wav"] - after["mic_clean.wav"]) < 0.05   # all that reached the disk is back
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["repaired"] is True and meta["duration_s"] == pytest.approx(after["mic_raw.wav"], abs=1e-3)
    last_turn = max(e["turn"] for e in read_jsonl(folder / "events.jsonl"))
    assert f"question {last_turn}" in (folder / "transcript.md").read_text()
    assert repair_session(folder).actions == []                      # idempotent


def test_repair_of_a_truncated_session(tmp_path):
    rec = SessionRecorder(tmp_path / "s", sync_interval_s=0.05)
    rec.start()
    rec.write_mic_raw(tone(1.0, 16_000), 16_000)
    rec.write_assistant(tone(0.5, 24_000), 24_000, turn=1)
    for i, text in enumerate(["Hello ", "there, ", "friend."]):
        rec.on_event(event("assistant_text", 0.1 * i, 1, {"text": text}))
    rec.on_event(event("user_text", 0.0, 1, {"text": "hi", "final": True}))
    rec.close()
    folder = rec.path
    # damage it like a crash: garbage header sizes, a torn half-frame, a torn last event line, no transcript
    with open(folder / "mic_raw.wav", "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 0))
        f.seek(0, os.SEEK_END)
        f.write(b"\x00\x00")
    with open(folder / "assistant.wav", "r+b") as f:
        data_size_pos = 58 - 4
        f.seek(data_size_pos)
        f.write(struct.pack("<I", 0xFFFFFFF0))
    with open(folder / "events.jsonl", "a") as f:
        f.write('{"t": 0.5, "turn": 1, "type": "assistant_te')
    (folder / "transcript.md").unlink()

    report = repair_session(folder)
    assert report.ok and report.actions
    assert any("events.jsonl" in a for a in report.actions)
    mic, rate = sf.read(folder / "mic_raw.wav", dtype="float32")
    assert rate == 16_000 and np.array_equal(mic, tone(1.0, 16_000))
    asst, rate = sf.read(folder / "assistant.wav", dtype="float32")
    assert rate == 24_000 and len(asst) == 12_000
    events = read_jsonl(folder / "events.jsonl")
    assert len(events) == 4
    assert "Hello there, friend." in (folder / "transcript.md").read_text()


def test_repair_rebuilds_missing_meta(tmp_path):
    rec = SessionRecorder(tmp_path / "s")
    rec.start()
    rec.write_mic_raw(tone(0.5, 16_000), 16_000)
    rec.close()
    (rec.path / "meta.json").unlink()
    report = repair_session(rec.path)
    assert report.ok
    meta = json.loads((rec.path / "meta.json").read_text())
    assert meta["streams"]["mic_raw"]["frames"] == 8_000 and meta["duration_s"] == 0.5


# ---------------------------------------------------------------------------------------------- disk full


def _check_stopped_cleanly(folder: Path) -> None:
    for name in WAVS:
        if (folder / name).exists():
            sf.read(folder / name, dtype="float32")   # readable, header within the file
    read_jsonl(folder / "events.jsonl")                # no torn line
    json.loads((folder / "meta.json").read_text())


@pytest.fixture
def tiny_tmpfs(tmp_path):
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.decode().strip()}); the RLIMIT_FSIZE test covers it")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_a_tiny_tmpfs_stops_recording_with_a_warning_event(tiny_tmpfs):
    bus = EventBus()
    published: list = []
    bus.subscribe(published.append)
    rec = SessionRecorder(root=tiny_tmpfs, sync_interval_s=0.02)
    assert rec.start()
    rec.attach(bus)
    block = tone(0.1, 48_000)
    t_start = time.monotonic()
    for i in range(100):                        # 10 s of 48 kHz float32 = 1.9 MB > 256 kB
        t0 = time.monotonic()
        rec.write_mic_raw(block, 48_000, t=i * 0.1)
        rec.write_mic_clean(block[::3], t=i * 0.1)
        bus.publish(event("assistant_text", i * 0.1, 1, {"text": "word "}))
        assert time.monotonic() - t0 < 0.05   # the conversation side never waits on the disk
        time.sleep(0.005)
        if rec.failed:
            break
    deadline = time.monotonic() + 5
    while not rec.failed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rec.failed and "No space left on device" in rec.error
    warnings = [e for e in published if e.type == "warning"]
    assert len(warnings) == 1 and warnings[0].code == "recording_stopped"
    assert warnings[0].source == "session" and str(rec.path) in warnings[0].message
    # the conversation goes on: more input is accepted and ignored
    rec.write_mic_raw(block, 48_000)
    bus.publish(event("assistant_text", 99.0, 2, {"text": "still talking"}))
    rec.close()
    assert time.monotonic() - t_start < 20
    _check_stopped_cleanly(rec.path)


def test_file_size_limit_in_a_subprocess_stops_recording_not_the_process(tmp_path):
    """Disk full simulated with RLIMIT_FSIZE (EFBIG instead of ENOSPC), SIGXFSZ ignored."""
    folder = tmp_path / "limited"
    proc = _start_worker(folder, "--seconds", "3", "--fsize-limit", "100000")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["done"] and result["failed"]                    # the worker ran its whole conversation
    assert result["blocks"] >= 250
    assert "File too large" in result["error"]
    assert [p["code"] for p in result["problems"]] == ["recording_stopped"]
    _check_stopped_cleanly(folder)
    assert sf.info(folder / "mic_raw.wav").frames > 0


def test_unwritable_folder_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    problems = []
    rec = SessionRecorder(root=blocker / "sessions", on_problem=problems.append)
    assert rec.start() is False
    assert rec.failed and not rec.active and problems[0].type == "warning"
    rec.write_mic_raw(np.zeros(100, np.float32), 16_000)
    rec.on_event(event("state", 0.0, 0))
    rec.close()


# ---------------------------------------------------------------------------------------------- retention, export


def test_retention_deletes_only_old_sessions(tmp_path):
    paths = []
    for _ in range(3):
        rec = SessionRecorder()
        rec.start()
        rec.write_mic_raw(np.zeros(160, np.float32), 16_000)
        rec.close()
        paths.append(rec.path)
    old_time = time.time() - 40 * 86400
    for p in paths[:2]:
        for f in [p, *p.iterdir()]:
            os.utime(f, (old_time, old_time))
    assert apply_retention(0).deleted == [] and apply_retention(None).deleted == []
    result = apply_retention(30, keep={paths[1]})
    assert result.deleted == [paths[0]] and result.skipped == []
    assert {s.path for s in list_sessions()} == {paths[1], paths[2]}
    # a recorder with a retention setting applies it when it starts
    rec = SessionRecorder(retention_days=30)
    rec.start()
    rec.close()
    assert {s.path for s in list_sessions()} == {paths[2], rec.path}


def test_export_zip_holds_every_file(tmp_path):
    rec = SessionRecorder(sync_interval_s=0.05)
    rec.start()
    rec.write_mic_raw(tone(0.3, 16_000), 16_000)
    rec.write_mic_clean(tone(0.3, 16_000))
    rec.write_playback(tone(0.2, 24_000), 24_000)
    rec.write_assistant(tone(0.2, 24_000), 24_000, turn=1)
    rec.on_event(event("assistant_text", 0.1, 1, {"text": "hi"}))
    rec.close()
    out = export_session(rec.path, tmp_path / "out.zip")
    assert out.stat().st_mode & 0o777 == 0o600
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        assert names == {f"{rec.path.name}/{f.name}" for f in rec.path.iterdir()}
        assert {f"{rec.path.name}/{n}" for n in (*WAVS, "events.jsonl", "transcript.md", "meta.json")} <= names
        data, rate = sf.read(zf.open(f"{rec.path.name}/mic_raw.wav"), dtype="float32")
        assert rate == 16_000 and np.array_equal(data, tone(0.3, 16_000))
        assert json.loads(zf.read(f"{rec.path.name}/meta.json"))["complete"] is True
    with pytest.raises(ValueError):
        export_session(rec.path, rec.path / "inside.zip")
