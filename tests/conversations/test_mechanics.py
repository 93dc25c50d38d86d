"""A scripted conversation through the real file-mode loop (capture chain, AEC3 with the played reference, the
engine) in a simulated room, with the real Freeze-Omni backend on the tiny fixture (random weights, greedy:
deterministic). What is checked is the mechanics of the harness on real events, not the quality of the decisions:
the scripted user hears the assistant, every utterance is spoken and matched to the engine's turns, the report is
complete, and the same seed gives the same conversation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/_shared
from _shared import default_fixture, fixture_spec, require_espeak  # noqa: E402

from core.harness import ScriptedInput, ScriptedUser, parse_script, read_events, score  # noqa: E402

FIXTURE = default_fixture()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (FIXTURE / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")]

SCRIPT = {
    "name": "mechanics",
    "answer_timeout_s": 12,
    "utterances": [
        {"id": "ask", "text": "Tell me a long story about a dragon.", "timing": {"at_s": 0.5}, "expect": "answered"},
        {"id": "bc", "text": "mm-hm", "voice": "en-us+f3",
         "timing": {"after": "answer_start", "delay_s": 0.8, "timeout_s": 8}, "expect": "ignored"},
        {"id": "stop", "text": "Stop. What is the capital of France?", "voice": "en-gb",
         "timing": {"after": "previous_end", "delay_s": 1.0}, "expect": "interrupts", "keywords": {"any": ["paris"]}},
        {"id": "next", "text": "What is the capital of Japan?",
         "timing": {"after": "answer_end", "delay_s": 0.8, "timeout_s": 10}, "expect": "answered"},
    ],
}


@pytest.fixture(scope="module")
def fo_backend():
    require_espeak()
    from core.compose.build import build_backend

    backend = build_backend(fixture_spec())
    yield backend
    backend.close()


def converse(backend, tmp: Path, name: str) -> tuple[list[dict], list[dict], dict]:
    from core.audio.room import EchoRoom
    from core.engine.filemode import run_conversation

    script = parse_script(SCRIPT)
    user = ScriptedUser(script)
    run_conversation(backend, ScriptedInput(user), tmp / f"{name}.wav", events_path=tmp / f"{name}.jsonl",
                     room=EchoRoom("laptop", seed=3))
    events = read_events(tmp / f"{name}.jsonl")
    return user.timeline(), events, score(script, user.timeline(), events)


def test_a_scripted_conversation_in_a_room_through_the_real_loop(fo_backend, tmp_path):
    timeline, events, report = converse(fo_backend, tmp_path, "a")
    json.dumps(report)                                             # JSON-ready
    assert all(u["start_s"] is not None and u["end_s"] > u["start_s"] for u in timeline)
    # the user is told when the assistant is audible, as the engine sees it: overlaps and answer anchors agree
    # with the engine's own "assistant audible" flags (one per chunk). The fixture's random weights often answer
    # with text and no audio, so whether this run overlaps at all is up to them; the Lite acceptance suite
    # (test_suite.py) has real overlaps.
    audible = [t for t, a in ((e["t"], e["assistant_audible"]) for e in events if e["type"] == "levels") if a]
    for u in timeline:
        if u["overlap_s"] > 0:
            assert any(u["start_s"] - 0.2 <= t <= u["end_s"] + 0.4 for t in audible), u
        if u["timing"].get("after") == "answer_start" and not u["timed_out"]:
            assert any(abs(t - u["anchor_t"]) <= 0.4 for t in audible), u
    onsets = {e["turn"] for e in events if e["type"] == "vad_onset"}
    matched = {t for r in report["utterances"] for t in r["turns"]} | {s["turn"] for s in report["stray_turns"]}
    assert matched == onsets                                       # every turn is an utterance's or a stray one
    agg = report["aggregate"]
    bi = agg["barge_ins"]
    assert agg["utterances"] == 4 and bi["count"] + bi["not_overlapped"] == 1   # the "stop" utterance
    for r in report["utterances"]:
        assert set(r) >= {"ok", "turns", "transcript", "answered", "interrupted", "left_in_transcript"}


def test_the_same_seed_gives_the_same_conversation(fo_backend, tmp_path):
    from core.engine.events import COMPUTE_FIELDS

    def stable(events: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if k not in COMPUTE_FIELDS} for e in events]

    a_timeline, a_events, _ = converse(fo_backend, tmp_path, "a")
    b_timeline, b_events, _ = converse(fo_backend, tmp_path, "b")
    assert a_timeline == b_timeline
    assert stable(a_events) == stable(b_events)
