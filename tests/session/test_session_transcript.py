"""Per-turn summaries and transcript.md from engine-style events (partials, pieces, barge-in)."""

from __future__ import annotations

from core.session.transcript import render_transcript, summarize_turns


def _ev(t, turn, type, **data):
    return {"t": t, "turn": turn, "type": type, **data}


EVENTS = [
    _ev(0.0, 0, "state", state="listening"),
    _ev(0.5, 1, "vad_onset", at=0.5),
    _ev(0.8, 1, "user_text", text="hello the", partial=True, final=False),
    _ev(1.0, 1, "user_text", text="hello there", partial=True, final=False),
    _ev(1.2, 1, "user_text", text=", how are you?", final=True),
    _ev(1.3, 1, "turn_decision", state="ss", reason="backend"),
    _ev(1.5, 1, "assistant_text", text="I am fine. "),
    _ev(1.6, 1, "assistant_text", text="And you? Let me tell you a story."),
    _ev(1.9, 1, "latency", first_audio_ms=300.0, first_played_ms=350.0, decision_ms=100.0),
    _ev(2.5, 2, "vad_onset", at=2.5),
    _ev(2.6, 2, "turn_decision", state="el", reason="too_short", candidate=True),
    _ev(3.0, 3, "vad_onset", at=3.0),
    _ev(3.4, 3, "turn_decision", state="ss", barge_in=True, candidate=True),
    _ev(3.4, 3, "interruption", reply_turn=1, heard_text="I am fine. And you?",
        unheard_text="Let me tell you a story."),
    _ev(3.9, 3, "user_text", text="stop", final=True),
    _ev(4.0, 3, "turn_decision", state="ss"),
]


def test_summaries_follow_the_engine_text_semantics():
    turns = {s.turn: s for s in summarize_turns(EVENTS)}
    assert turns[1].user_text == "hello there, how are you?" and turns[1].user_final
    assert turns[1].decision == "ss" and turns[1].latencies["first_audio_ms"] == 300.0
    assert turns[1].interrupted and turns[1].heard_text == "I am fine. And you?"
    assert turns[2].decision == "el" and turns[2].user_text == ""
    assert turns[3].decisions == ["ss", "ss"] and turns[3].user_text == "stop"


def test_transcript_marks_the_unheard_part():
    md = render_transcript(summarize_turns(EVENTS), {"session_id": "s1", "profile": "lite"})
    assert md.startswith("# Parley session s1")
    assert "**User** [0:00.8, turn 1]: hello there, how are you?" in md
    assert "I am fine. And you? ~~Let me tell you a story.~~ _(interrupted; not heard)_" in md
    assert "turn 2" not in md            # an ignored input with no text is not a line of the transcript
    assert "**User** [0:03.9, turn 3]: stop" in md


def test_compare_turns_checks_decisions_texts_and_what_was_heard():
    from core.session.compare import compare_turns, dialogue_only, render_report_md

    def turns(events):
        return dialogue_only(summarize_turns(events))

    same = compare_turns(turns(EVENTS), turns(EVENTS))
    assert same["match"] and same["counts"] == {"original": 3, "replay": 3}
    other = [dict(e) for e in EVENTS]
    for e in other:
        if e["type"] == "interruption":
            e["heard_text"], e["unheard_text"] = "I am fine.", "And you? Let me tell you a story."
    diff = compare_turns(turns(EVENTS), turns(other))
    assert not diff["match"] and diff["reasons"] == ["turn #1: heard_text differs"]
    shorter = compare_turns(turns(EVENTS), turns(EVENTS[:9]))
    assert not shorter["match"] and "turn #2: only in the original" in shorter["reasons"]
    report = {"verdict": "mismatch", "original": {"path": "a"}, "replay": {"path": "b"}, **shorter}
    assert "missing in the replay" in render_report_md(report)


def test_a_command_that_stopped_the_answer_stays_and_a_backchannel_goes():
    """ "Wait." over the answer interrupts it and is then not answered (reason ``command``): the user's words stay
    in the transcript; an "okay" over it is not a turn and leaves none."""
    events = EVENTS[:9] + [
        _ev(2.5, 2, "vad_onset", at=2.5),
        _ev(2.8, 2, "user_text", text="okay", final=True),
        _ev(2.9, 2, "turn_decision", state="el", reason="backchannel", candidate=True),
    ] + EVENTS[11:14] + [               # the barge-in of turn 3
        _ev(3.9, 3, "user_text", text="Wait.", final=True),
        _ev(4.0, 3, "turn_decision", state="el", reason="command"),
    ]
    turns = {s.turn: s for s in summarize_turns(events)}
    assert turns[2].ignored and not turns[3].ignored
    md = render_transcript(list(turns.values()), {"session_id": "s1", "profile": "lite"})
    assert "okay" not in md and "**User** [0:03.9, turn 3]: Wait." in md
