"""A file-driven conversation through the real Engine recorded as a session, replayed, and compared.

The backend is the real Freeze-Omni backend on the tiny parity fixture (random weights, greedy, so every decision,
token and sample is computed by the shipped model code and the run is deterministic) with the real echo-aware
silero VAD, built as ``parley chat`` / ``parley replay`` build them (``core.compose.build.build_engine_parts``). No
weights are needed; the Lite-profile versions are in test_session_acceptance.py.
"""

from __future__ import annotations

import argparse
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from _signals import read_jsonl
from core.constants import MODEL_INPUT_RATE
from core.compose.build import build_engine_parts, session_settings
from core.compose.spec import ProfileSpec, SamplingSpec
from core.engine.config import EngineConfig
from core.engine.conversation import Placed, mix
from core.engine.filemode import load_wav_16k, run_conversation
from core.session.cli import add_session_parsers
from core.session.filetap import ChatRecording, read_input
from core.session.recorder import SessionRecorder
from core.session.replay import replay_session

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PARLEY_FIXTURES") or (REPO / ".." / "shared" / "fixtures")).resolve()
TINY_A = FIXTURES / "freeze_omni_tiny_a"

pytest.importorskip("core.model.freeze_omni.backend")
pytestmark = pytest.mark.skipif(not (TINY_A / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")

PROFILE = "freeze-omni"


def _settings() -> dict:
    """What ``parley chat --profile freeze-omni --greedy --checkpoint ... --llm ...`` records in meta.json (answers
    capped at 40 LLM tokens via PARLEY_ENGINE_SETTINGS, to keep the run short)."""
    spec = ProfileSpec(profile=PROFILE, checkpoint=str(TINY_A / "checkpoints"), llm=str(TINY_A / "llm"),
                       sampling=SamplingSpec(greedy=True, max_new_tokens=40))
    return session_settings(spec, EngineConfig())


def conversation_audio(rate: int = 48_000) -> np.ndarray:
    """The fixture's two 16 kHz speech-like inputs in one conversation with pauses, resampled to ``rate``: the
    main input (the model takes the turn), the input it rejects, the main input again."""
    clips = {name: sf.read(str(TINY_A / name), dtype="float32")[0] for name in ("input.wav", "input_el.wav")}
    audio = mix([Placed(0.3, clips["input.wav"]), Placed(6.0, clips["input_el.wav"]),
                 Placed(11.0, clips["input.wav"])], tail_s=4.0)
    return audio if rate == MODEL_INPUT_RATE else soxr.resample(audio, MODEL_INPUT_RATE, rate).astype(np.float32)


def _record_chat(tmp_path, rate=48_000):
    wav = tmp_path / "input.wav"
    sf.write(wav, conversation_audio(rate), rate, subtype="FLOAT")
    settings = _settings()
    rec = SessionRecorder(tmp_path / "original", profile=PROFILE, mode="chat", settings=settings,
                          sync_interval_s=0.05)
    assert rec.start()
    raw, raw_rate = read_input(str(wav))
    audio = load_wav_16k(wav)
    tap = ChatRecording(rec, raw, raw_rate, audio)
    parts = build_engine_parts(PROFILE, settings)
    try:
        result = run_conversation(parts.backend, audio, tmp_path / "played.wav", config=parts.config,
                                  system_prompt=parts.system_prompt, subscribers=tap.subscribers,
                                  on_engine=tap.on_engine, on_chunk=tap.on_chunk)
    finally:
        parts.backend.close()
    tap.finish()
    rec.close()
    return rec.path, result, raw, audio


def _per_turn(events: list[dict], kind: str, field: str) -> dict[int, list]:
    out: dict[int, list] = {}
    for e in events:
        if e["type"] == kind:
            out.setdefault(e["turn"], []).append(e[field])
    return out


def test_chat_recording_writes_every_stream_on_one_timeline(tmp_path):
    session, result, raw, audio = _record_chat(tmp_path)
    assert result.answers >= 1 and result.errors == 0
    mic, rate = sf.read(session / "mic_raw.wav", dtype="float32")
    assert rate == 48_000 and np.array_equal(mic, raw)                  # the input, bit for bit
    clean, rate = sf.read(session / "mic_clean.wav", dtype="float32")
    assert rate == MODEL_INPUT_RATE and np.array_equal(clean, audio)    # what the engine was fed
    played, prate = sf.read(session / "playback.wav", dtype="float32")
    reference, _ = sf.read(tmp_path / "played.wav", dtype="float32")     # run_conversation's own output (PCM16)
    assert prate == 24_000 and len(played) == len(reference)
    assert np.max(np.abs(played - reference)) < 1e-4                    # same timeline, sample for sample
    events = read_jsonl(session / "events.jsonl")
    decisions = [e["state"] for e in events if e["type"] == "turn_decision"]
    assert "ss" in decisions and "el" in decisions                      # the model took a turn and rejected one
    # assistant.wav: every piece the backend produced, turn after turn; turn_offsets say where each turn starts
    samples = {turn: sum(n) for turn, n in _per_turn(events, "audio_out", "samples").items()}
    assistant, arate = sf.read(session / "assistant.wav", dtype="float32")
    assert arate == 24_000 and len(assistant) == sum(samples.values()) > 0
    meta = json.loads((session / "meta.json").read_text())
    assert meta["mode"] == "chat" and meta["complete"]
    offsets, pos = {}, 0
    for turn in sorted(samples):
        offsets[str(turn)] = pos
        pos += samples[turn]
    assert meta["streams"]["assistant"]["turn_offsets"] == offsets
    # ... and the answer is heard on the playback timeline where the assistant stream says it started
    first = min(samples)
    start = int(round((meta["streams"]["assistant"]["start_t"] - meta["streams"]["playback"]["start_t"]) * 24_000))
    n = samples[first]
    assert np.max(np.abs(played[start:start + n] - assistant[:n])) < 1e-4
    # the transcript holds every answer's text (more than one turn was answered in words)
    texts = {turn: "".join(parts) for turn, parts in _per_turn(events, "assistant_text", "text").items()}
    texts = {turn: text for turn, text in texts.items() if text.strip()}
    assert len(texts) >= 2
    transcript = (session / "transcript.md").read_text()
    for turn, text in texts.items():
        assert f"turn {turn}]: {text.strip()}" in transcript


def test_replay_reproduces_decisions_and_texts(tmp_path):
    session, _, _, _ = _record_chat(tmp_path)
    # the default builder: the engine rebuilt from meta.json's settings, as ``parley replay`` does
    report = replay_session(session, build_engine_parts, tmp_path / "replayed")
    assert report["verdict"] == "match", report["reasons"]
    original = read_jsonl(session / "events.jsonl")
    n_turns = len({e["turn"] for e in original if e["type"] == "turn_decision"})
    assert report["counts"] == {"original": n_turns, "replay": n_turns} and n_turns >= 2
    assert report["source_kind"] == "raw"                               # a chat session replays its input
    out = tmp_path / "replayed"
    saved = json.loads((out / "report.json").read_text())
    assert saved["verdict"] == "match" and all(row["match"] for row in saved["turns"])
    assert saved["turns"][0]["latencies"]["first_audio_ms"]["delta"] == 0.0
    md = (out / "report.md").read_text()
    assert md.startswith("# Replay report: **MATCH**") and "| 1 |" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mode"] == "replay" and meta["replay_of"]["path"] == str(session)
    assert meta["profile"] == PROFILE and meta["settings"] == _settings()
    # the replay is itself a complete session: its events match the original's, compute-time fields aside
    from core.engine.events import COMPUTE_FIELDS

    def strip(evs):
        return [{k: v for k, v in e.items() if k not in COMPUTE_FIELDS and k != "config"} for e in evs
                if e["type"] not in ("info",)]

    assert strip(read_jsonl(out / "events.jsonl")) == strip(original)
    # the same answer audio, sample for sample
    a, _ = sf.read(session / "assistant.wav", dtype="float32")
    b, _ = sf.read(out / "assistant.wav", dtype="float32")
    assert len(a) > 0 and np.array_equal(a, b)


def test_replay_reports_a_mismatch(tmp_path):
    session, _, _, _ = _record_chat(tmp_path)

    def shorter_answers(profile, settings):
        # a changed backend: the same model with its answers capped at 8 LLM tokens instead of 40
        spec = dict(settings["spec"], sampling=dict(settings["spec"]["sampling"], max_new_tokens=8))
        return build_engine_parts(profile, dict(settings, spec=spec))

    report = replay_session(session, shorter_answers, tmp_path / "replayed")
    assert report["verdict"] == "mismatch"
    assert "turn #1: assistant_text differs" in report["reasons"], report["reasons"]
    row = report["turns"][0]
    assert row["decision"]["original"] == row["decision"]["replay"] == "ss"   # the same turn, a shorter answer
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

    from core.errors import UserError

    args = parser.parse_args(["session", "export", str(tmp_path / "missing"), str(tmp_path / "x.zip")])
    with pytest.raises(UserError):
        args.func(args)


def test_a_chat_in_a_room_begins_with_the_ready_sound_and_replays_the_same(tmp_path):
    """``parley chat --echo laptop --record``: the session begins with the app's ready sound, the input starts
    READY_LEAD_S later (the recorded streams say so), the sound's echo opens no turn, and ``parley replay`` runs the
    same session again with the sound: the same decisions and texts."""
    from core.audio.ready_sound import DURATION_S, ready_sound
    from core.audio.room import EchoRoom
    from core.engine.filemode import READY_LEAD_S

    wav = tmp_path / "input.wav"
    sf.write(wav, conversation_audio(MODEL_INPUT_RATE), MODEL_INPUT_RATE, subtype="FLOAT")
    spec = ProfileSpec(profile=PROFILE, checkpoint=str(TINY_A / "checkpoints"), llm=str(TINY_A / "llm"),
                       sampling=SamplingSpec(greedy=True, max_new_tokens=40))
    settings = session_settings(spec, EngineConfig(), "laptop", 0, True)
    rec = SessionRecorder(tmp_path / "original", profile=PROFILE, mode="chat", settings=settings)
    assert rec.start()
    raw, raw_rate = read_input(str(wav))
    audio = load_wav_16k(wav)
    tap = ChatRecording(rec, raw, raw_rate, audio, offset_s=READY_LEAD_S)
    parts = build_engine_parts(PROFILE, settings)
    assert parts.ready_sound and parts.room == "laptop"
    try:
        result = run_conversation(parts.backend, audio, tmp_path / "played.wav", config=parts.config,
                                  system_prompt=parts.system_prompt, room=EchoRoom("laptop", seed=0),
                                  subscribers=tap.subscribers, on_engine=tap.on_engine, on_chunk=tap.on_chunk,
                                  ready_sound=True)
    finally:
        parts.backend.close()
    tap.finish()
    rec.close()
    assert result.input_offset_s == READY_LEAD_S and result.answers >= 1
    played, prate = sf.read(tmp_path / "played.wav", dtype="float32")
    n = int(round(DURATION_S * prate))
    assert np.max(np.abs(played[:n] - ready_sound(prate))) < 1e-3            # PCM16 output
    events = read_jsonl(rec.path / "events.jsonl")
    onsets = [e["at"] for e in events if e["type"] == "vad_onset"]
    assert onsets and min(onsets) >= READY_LEAD_S + 0.3 - 0.5                 # the user's first word (0.3 s in)
    meta = json.loads((rec.path / "meta.json").read_text())
    assert abs(meta["streams"]["mic_raw"]["start_t"] - READY_LEAD_S) < 0.02
    mic, _ = sf.read(rec.path / "mic_raw.wav", dtype="float32")
    assert np.array_equal(mic, raw)
    report = replay_session(rec.path, build_engine_parts, tmp_path / "replayed")
    assert report["verdict"] == "match", report["reasons"]
