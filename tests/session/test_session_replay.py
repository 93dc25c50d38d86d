"""A file-driven conversation through the real Engine recorded as a session, replayed, and compared.

The backend is a deterministic toy (tests/session/_fakes.py) so these run without weights; the Lite-profile
versions are in test_session_acceptance.py.
"""

from __future__ import annotations

import argparse
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from _fakes import EnergyVad, ToyBackend, conversation_audio
from _signals import read_jsonl
from core.constants import MODEL_INPUT_RATE
from core.engine.filemode import load_wav_16k, run_conversation
from core.session.cli import add_session_parsers
from core.session.filetap import ChatRecording, read_input
from core.session.recorder import SessionRecorder
from core.session.replay import EngineParts, replay_session


def _record_chat(tmp_path, rate=48_000):
    wav = tmp_path / "input.wav"
    sf.write(wav, conversation_audio(rate), rate, subtype="FLOAT")
    rec = SessionRecorder(tmp_path / "original", profile="toy", mode="chat", settings={"toy": True},
                          sync_interval_s=0.05)
    assert rec.start()
    raw, raw_rate = read_input(str(wav))
    audio = load_wav_16k(wav)
    tap = ChatRecording(rec, raw, raw_rate, audio)
    result = run_conversation(ToyBackend(), EnergyVad(), audio, tmp_path / "played.wav",
                              subscribers=tap.subscribers, on_engine=tap.on_engine)
    tap.finish()
    rec.close()
    return rec.path, result, raw, audio


def _toy_builder(backend=None):
    def build(profile, settings):
        assert settings == {"toy": True}
        return EngineParts(backend=backend or ToyBackend(), vad=EnergyVad(), profile="toy", settings=settings)

    return build


def test_chat_recording_writes_every_stream_on_one_timeline(tmp_path):
    session, result, raw, audio = _record_chat(tmp_path)
    assert result.answers == 2
    mic, rate = sf.read(session / "mic_raw.wav", dtype="float32")
    assert rate == 48_000 and np.array_equal(mic, raw)                  # the input, bit for bit
    clean, rate = sf.read(session / "mic_clean.wav", dtype="float32")
    assert rate == MODEL_INPUT_RATE and np.array_equal(clean, audio)    # what the engine was fed
    played, prate = sf.read(session / "playback.wav", dtype="float32")
    reference, _ = sf.read(tmp_path / "played.wav", dtype="float32")     # run_conversation's own output (PCM16)
    assert prate == 24_000 and len(played) == len(reference)
    assert np.max(np.abs(played - reference)) < 1e-4                    # same timeline, sample for sample
    assistant, arate = sf.read(session / "assistant.wav", dtype="float32")
    assert arate == 24_000 and len(assistant) == 4 * int(0.4 * 24_000)  # two answers x two sentences
    meta = json.loads((session / "meta.json").read_text())
    assert meta["mode"] == "chat" and meta["complete"]
    assert set(meta["streams"]["assistant"]["turn_offsets"].values()) == {0, 2 * int(0.4 * 24_000)}
    events = read_jsonl(session / "events.jsonl")
    assert [e["state"] for e in events if e["type"] == "turn_decision"] == ["ss", "ss"]
    transcript = (session / "transcript.md").read_text()
    assert "Answer 1. I heard" in transcript and "Answer 2." in transcript


def test_replay_reproduces_decisions_and_texts(tmp_path):
    session, _, _, _ = _record_chat(tmp_path)
    report = replay_session(session, tmp_path / "replayed", builder=_toy_builder())
    assert report["verdict"] == "match", report["reasons"]
    assert report["counts"] == {"original": 2, "replay": 2}
    assert report["source_kind"] == "raw"                               # a chat session replays its input
    out = tmp_path / "replayed"
    saved = json.loads((out / "report.json").read_text())
    assert saved["verdict"] == "match" and all(row["match"] for row in saved["turns"])
    assert saved["turns"][0]["latencies"]["first_audio_ms"]["delta"] == 0.0
    md = (out / "report.md").read_text()
    assert md.startswith("# Replay report: **MATCH**") and "| 1 |" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "replay" and meta["replay_of"]["path"] == str(session)
    # the replay is itself a complete session: its events match the original's, compute-time fields aside
    from core.engine.events import COMPUTE_FIELDS

    def strip(evs):
        return [{k: v for k, v in e.items() if k not in COMPUTE_FIELDS and k != "config"} for e in evs
                if e["type"] not in ("info",)]

    assert strip(read_jsonl(out / "events.jsonl")) == strip(read_jsonl(session / "events.jsonl"))


def test_replay_reports_a_mismatch(tmp_path):
    session, _, _, _ = _record_chat(tmp_path)

    class Chattier(ToyBackend):
        def reply(self, conv, cancel):
            yield from super().reply(conv, cancel)
            yield __import__("core.engine.backend", fromlist=["ReplyPiece"]).ReplyPiece(text="Anything else?")

    report = replay_session(session, tmp_path / "replayed", builder=_toy_builder(Chattier()))
    assert report["verdict"] == "mismatch"
    assert "turn #1: assistant_text differs" in report["reasons"]
    assert "**≠**" in (tmp_path / "replayed" / "report.md").read_text()


def test_cli_handlers_repair_export_list(tmp_path, capsys):
    session, _, _, _ = _record_chat(tmp_path)
    parser = argparse.ArgumentParser(prog="parley")
    add_session_parsers(parser.add_subparsers(dest="command"))

    args = parser.parse_args(["session", "repair", str(session)])
    assert args.func(args) == 0 and "nothing to repair" in capsys.readouterr().out

    args = parser.parse_args(["session", "export", str(session), str(tmp_path / "s.zip")])
    assert args.func(args) == 0 and "exported" in capsys.readouterr().out
    with zipfile.ZipFile(tmp_path / "s.zip") as zf:
        assert f"{session.name}/events.jsonl" in zf.namelist()

    args = parser.parse_args(["session", "list", "--folder", str(tmp_path), "--json"])
    assert args.func(args) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["path"] for s in listed["sessions"]] == [str(session)]

    args = parser.parse_args(["replay", str(session), "--output", str(tmp_path / "r"), "--source", "raw"])
    assert args.session == str(session) and args.output == str(tmp_path / "r") and args.profile is None

    from core.cli import UserError

    args = parser.parse_args(["session", "export", str(tmp_path / "missing"), str(tmp_path / "x.zip")])
    with pytest.raises(UserError):
        args.func(args)
