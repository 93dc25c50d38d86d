"""Sessions recorded before typed events (Parley 0f1d2a4: events as a type string plus a dict, ``meta.json``
settings in the ``cli``/``backend`` form) still load, summarise and replay.

``data/session_0f1d2a4`` is a real session folder that version recorded (``parley chat --record`` on the tiny
Freeze-Omni fixture's input, answers capped at 8 tokens). The test reads it in place and never writes into it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from _shared import default_fixture
from core.engine.events import UnknownEvent, read_jsonl
from core.engine.turns import summarize_turns
from core.session.transcript import render_transcript
from core.session.store import read_meta

OLD = Path(__file__).resolve().parent / "data" / "session_0f1d2a4"
FIXTURE = default_fixture()


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_every_old_event_reads_as_its_typed_class_and_the_transcript_is_the_same():
    events = read_jsonl(OLD / "events.jsonl")
    assert len(events) == len((OLD / "events.jsonl").read_text().splitlines())
    assert not [e for e in events if isinstance(e, UnknownEvent)]
    # written back, each line is what the old version wrote (no field lost, none invented)
    import json

    for line, ev in zip((OLD / "events.jsonl").read_text().splitlines(), events):
        assert ev.to_dict() == json.loads(line)
    meta = read_meta(OLD)
    assert render_transcript(summarize_turns(events), meta) == (OLD / "transcript.md").read_text()


@pytest.mark.skipif(not (FIXTURE / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")
def test_an_old_session_replays_unchanged(tmp_path):
    from core.compose.build import build_engine_parts
    from core.session.replay import replay_session

    before = _digest(OLD)

    def builder(profile, settings):
        # the recording names the fixture where it lay on the recording machine; use this machine's copy
        cli = dict(settings["cli"], checkpoint=str(FIXTURE / "checkpoints"), llm=str(FIXTURE / "llm"))
        return build_engine_parts(profile, dict(settings, cli=cli))

    report = replay_session(OLD, builder, tmp_path / "replayed")
    assert report["verdict"] == "match", report["reasons"]
    assert report["counts"]["original"] == report["counts"]["replay"] >= 1
    assert _digest(OLD) == before            # the old folder is read, never written
