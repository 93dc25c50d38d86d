"""The conversation harness itself, without any model: script checking, the scripted user against a given
"assistant audible" timeline (a plain function of t, test input), scoring against hand-written event lists, WER."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _shared import require_espeak

from core.harness import ScriptedInput, ScriptedUser, combine, load_script, parse_script, read_events, score, unmet, wer
from core.harness.script import ScriptError
from core.harness.text import keywords_found, normalize, number_words
from core.harness.voices import SpeechError

SCRIPTS = Path(__file__).resolve().parent / "scripts"
RATE = 16_000


@pytest.fixture(scope="module", autouse=True)
def _espeak():
    require_espeak()


def run(user: ScriptedUser, audible, block: int = 2560, limit_s: float = 120.0) -> tuple[np.ndarray, float]:
    """Drive the scripted user as a file-mode loop would; ``audible(t)`` says whether the assistant is heard."""
    t, out, k = 0.0, [], 0
    while not user.done(t) and t < limit_s:
        user.assistant_audio(t, audible(t))
        out.append(user.block(t, block))
        k += 1
        t = k * block / RATE
    return np.concatenate(out), t


def script(*utterances: dict, **top) -> object:
    return parse_script({"name": "t", "utterances": list(utterances), **top})


# ----------------------------------------------------------------------------------------------------------------
# scripts


@pytest.mark.parametrize("data, message", [
    ({"utterances": []}, "'utterances' must be a non-empty list"),
    ({"utterances": [{"text": "hi", "expect": "answered"}], "colour": 1}, "unknown keys \\['colour'\\]"),
    ({"utterances": [{"text": "hi", "expect": "maybe"}]}, "utterance #1: expect must be one of"),
    ({"utterances": [{"text": "hi", "expect": "answered", "timing": {"after": "lunch"}}]}, "timing.after must be"),
    ({"utterances": [{"text": "hi", "expect": "joins_previous"}]}, "joins_previous needs a spoken utterance"),
    ({"utterances": [{"text": "a", "expect": "continued"}, {"text": "b", "expect": "answered"}]},
     "'continued' is for the utterance before"),
    ({"utterances": [{"text": "a", "expect": "answered"}, {"text": "b", "expect": "joins_previous"}]},
     "the next one joins it, so expect must be 'continued'"),
    ({"utterances": [{"text": "a <pause> b", "expect": "answered"}]}, "a pause is written <pause SECONDS>"),
    ({"utterances": [{"text": "ahem", "expect": "ignored", "keywords": {"any": ["x"]}}]}, "keywords make no sense"),
    ({"utterances": [{"id": "x", "text": "a", "expect": "ignored"}, {"id": "x", "text": "b", "expect": "ignored"}]},
     "ids must be unique"),
    ({"utterances": [{"sound": "sneeze", "expect": "ignored"}]}, "sound must be one of cough"),
    ({"utterances": [{"text": "a", "expect": "answered", "speed": "fast"}]}, "speed must be a number"),
])
def test_bad_scripts_are_one_line_errors(data, message):
    with pytest.raises(ScriptError, match=message) as info:
        parse_script(data)
    assert "\n" not in str(info.value)


def test_bad_files_and_voices(tmp_path):
    with pytest.raises(ScriptError, match="cannot read it"):
        load_script(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"utterances": [', encoding="utf-8")
    with pytest.raises(ScriptError, match="bad.json: not valid JSON \\(line 1"):
        load_script(bad)
    with pytest.raises(SpeechError, match="no voice 'en-zz'"):
        ScriptedUser(script({"text": "hello", "voice": "en-zz", "expect": "answered"}))
    with pytest.raises(SpeechError, match="no voice variant 'q9'"):
        ScriptedUser(script({"text": "hello", "voice": "en-us+q9", "expect": "answered"}))


def test_pauses_split_an_utterance():
    s = script({"text": "What is the capital of <pause 1.2> Germany?", "expect": "answered"})
    u = s.utterances[0]
    assert [(p.text, p.pause_before_s) for p in u.parts] == [("What is the capital of", 0.0), ("Germany?", 1.2)]
    assert u.spoken_text == "What is the capital of Germany?"


def test_the_suite_covers_what_issue_13_asks_for():
    scripts = [load_script(p) for p in sorted(SCRIPTS.glob("*.json"))]
    assert len(scripts) >= 8
    utts = [u for s in scripts for u in s.utterances]
    during_speech = [u for u in utts if u.expect == "ignored" and u.timing.after == "answer_start"]
    assert len(during_speech) >= 20
    assert len({u.voice for u in during_speech if u.sound is None}) >= 3
    texts = {u.spoken_text.lower() for u in during_speech}
    for word in ("mm-hm", "uh-huh", "yeah", "okay", "right", "i see", "haha", "ahem"):
        assert word in texts, word
    assert any(u.sound == "cough" for u in during_speech)
    assert sum(u.expect == "interrupts" for u in utts) >= 4
    assert any(u.expect == "interrupts" and "stop" in u.spoken_text.lower() and u.has_keywords for u in utts)
    assert any(u.expect == "interrupts" and u.spoken_text.lower().startswith("wait") for u in utts)
    assert sum(u.expect == "joins_previous" for u in utts) >= 2
    assert any(len(u.parts) > 1 and u.expect == "answered" for u in utts)
    assert any(u.expect == "ignored" and u.timing.after != "answer_start" for u in utts)
    assert len({u.voice for u in utts}) >= 5 and len({u.speed for u in utts}) >= 5
    for s in scripts:   # every voice exists and every utterance renders
        user = ScriptedUser(s)
        for i, _ in enumerate(s.utterances):
            assert len(user.utterance_audio(i)) > 0.05 * RATE


# ----------------------------------------------------------------------------------------------------------------
# the scripted user


def test_at_and_previous_end_are_sample_exact_and_independent_of_block_size():
    s = script({"text": "hello there", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"text": "okay", "voice": "en-gb", "timing": {"after": "previous_end", "delay_s": 0.3},
                "expect": "ignored"}, tail_s=0.5)
    a, _ = run(ScriptedUser(s), lambda t: False, block=2560, limit_s=60)
    b, _ = run(ScriptedUser(s), lambda t: False, block=160, limit_s=60)
    n = min(len(a), len(b))
    np.testing.assert_array_equal(a[:n], b[:n])
    user = ScriptedUser(s)
    audio, _ = run(user, lambda t: False)
    tl = user.timeline()
    assert tl[0]["start_s"] == 0.5
    first = user.utterance_audio(0)
    np.testing.assert_array_equal(audio[8000:8000 + len(first)], first)
    assert tl[1]["start_s"] == pytest.approx(tl[0]["end_s"] + 0.3, abs=1 / RATE)
    assert not np.any(audio[8000 + len(first):int(tl[1]["start_s"] * RATE)])
    assert tl[0]["assistant_audible_at_start"] is False and tl[0]["overlap_s"] == 0


def test_answer_start_waits_for_the_assistant_and_records_the_overlap():
    s = script({"text": "tell me a story", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"text": "mm-hm", "timing": {"after": "answer_start", "delay_s": 1.2}, "expect": "ignored"})
    user = ScriptedUser(s)
    run(user, lambda t: 4.0 <= t < 12.0)
    tl = user.timeline()
    assert tl[1]["anchor_t"] == pytest.approx(4.0, abs=0.16)       # the first block at which it was audible
    assert tl[1]["start_s"] == pytest.approx(tl[1]["anchor_t"] + 1.2, abs=1e-3)
    assert tl[1]["assistant_audible_at_start"] is True
    assert tl[1]["overlap_s"] == pytest.approx(tl[1]["end_s"] - tl[1]["start_s"], abs=0.01)
    assert not tl[1]["timed_out"]


def test_answer_end_waits_for_the_real_end_of_the_answer():
    """A gap shorter than the delay is not the end: the anchor re-arms and waits for the last silence."""
    s = script({"text": "what is the capital of France", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"text": "and of Italy", "timing": {"after": "answer_end", "delay_s": 0.8}, "expect": "answered"})
    user = ScriptedUser(s)
    run(user, lambda t: 3.0 <= t < 5.0 or 5.3 <= t < 8.0 or 13.0 <= t < 15.0)
    tl = user.timeline()
    assert tl[1]["anchor_t"] == pytest.approx(8.0, abs=0.16)
    assert tl[1]["start_s"] == pytest.approx(tl[1]["anchor_t"] + 0.8, abs=1e-3)


def test_an_answer_that_never_comes_times_out_and_says_so():
    s = script({"text": "hello", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"text": "are you there", "timing": {"after": "answer_start", "delay_s": 1.0, "timeout_s": 4.0},
                "expect": "answered"}, answer_timeout_s=6.0)
    user = ScriptedUser(s)
    _, end_t = run(user, lambda t: False)
    tl = user.timeline()
    assert tl[1]["timed_out"] is True and tl[1]["anchor_t"] is None
    assert tl[1]["start_s"] == pytest.approx(tl[0]["end_s"] + 4.0, abs=0.16)
    assert end_t == pytest.approx(tl[1]["end_s"] + 6.0, abs=0.16)       # done() after answer_timeout_s


def test_scripted_input_speaks_the_same_in_sample_positions():
    s = script({"text": "tell me a story", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"text": "mm-hm", "timing": {"after": "answer_start", "delay_s": 1.2}, "expect": "ignored"}, tail_s=1.0)
    audible = lambda t: 4.0 <= t < 9.0   # noqa: E731
    expected, end_t = run(ScriptedUser(s), audible)
    source, blocks, pos = ScriptedInput(ScriptedUser(s)), [], 0
    while not source.ended(pos):
        source.assistant_audible(pos / RATE, audible(pos / RATE))
        blocks.append(source.block(pos, 2560))
        pos += 2560
    np.testing.assert_array_equal(np.concatenate(blocks), expected)
    assert pos / RATE == pytest.approx(end_t)
    assert source.user.timeline()[1]["anchor_t"] is not None


def test_pauses_are_silence_inside_the_utterance():
    s = script({"text": "What is the capital of <pause 1.2> Germany?", "timing": {"at_s": 0.2}, "expect": "answered"})
    user = ScriptedUser(s)
    audio, _ = run(user, lambda t: 3.5 <= t < 6.0)
    parts = user.timeline()[0]["parts"]
    assert parts[1]["start_s"] - parts[0]["end_s"] == pytest.approx(1.2, abs=1 / RATE)
    gap = audio[int(parts[0]["end_s"] * RATE):int(parts[1]["start_s"] * RATE)]
    assert len(gap) > 0 and not np.any(gap)


def test_done_waits_for_the_answer_and_a_quiet_tail():
    s = script({"text": "hello", "timing": {"at_s": 0.5}, "expect": "answered"}, tail_s=1.0)
    user = ScriptedUser(s)
    audible = lambda t: 3.0 <= t < 6.0   # noqa: E731
    _, end_t = run(user, audible)
    assert 7.0 <= end_t < 7.2
    ignored = ScriptedUser(script({"text": "ahem", "timing": {"at_s": 0.5}, "expect": "ignored"}, tail_s=1.0))
    _, end_t = run(ignored, lambda t: False)
    assert end_t < ignored.timeline()[0]["end_s"] + 1.2


def test_a_cough_is_a_deterministic_noise_burst():
    s = script({"sound": "cough", "duration_s": 0.3, "timing": {"at_s": 0.1}, "expect": "ignored"})
    a, b = ScriptedUser(s).utterance_audio(0), ScriptedUser(s).utterance_audio(0)
    np.testing.assert_array_equal(a, b)
    assert len(a) == int(0.3 * RATE)
    assert 10 * np.log10(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(-26.0, abs=0.5)


# ----------------------------------------------------------------------------------------------------------------
# scoring on hand-written events


def ev(t: float, turn: int, type_: str, **fields) -> dict:
    return {"t": t, "turn": turn, "type": type_, **fields}


def answer(turn: int, t: float, text: str, played_s: float = 2.0) -> list[dict]:
    """The events of an answer to ``turn`` decided at ``t`` and played for ``played_s``."""
    rate = 22050
    return [ev(t, turn, "turn_decision", state="ss", reason="backend", candidate=False),
            ev(t + 0.3, turn, "assistant_text", text=text),
            ev(t + 0.4, turn, "audio_out", samples=int(played_s * rate), rate=rate, seconds=played_s),
            ev(t + 0.6, turn, "audio_played", samples=int(played_s * rate), total=int(played_s * rate), rate=rate)]


def timeline_of(s, spans: list[tuple[float, float]], parts=None, overlapped=()) -> list[dict]:
    out = []
    for i, (u, (a, b)) in enumerate(zip(s.utterances, spans)):
        out.append({"id": u.id, "start_s": a, "end_s": b, "timed_out": False,
                    "parts": (parts or {}).get(i, [{"text": u.spoken_text, "start_s": a, "end_s": b}]),
                    "assistant_audible_at_start": i in overlapped, "overlap_s": (b - a) if i in overlapped else 0})
    return out


STORY = script({"id": "ask", "text": "Tell me a story.", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"id": "bc", "text": "mm-hm", "timing": {"after": "answer_start", "delay_s": 1.2}, "expect": "ignored"},
               {"id": "stop", "text": "Stop. What is two plus two?",
                "timing": {"after": "previous_end", "delay_s": 1.0}, "expect": "interrupts",
                "keywords": {"any": ["four"]}})
STORY_TL = timeline_of(STORY, [(0.5, 1.6), (4.2, 4.9), (5.9, 7.6)], overlapped={1, 2})


def story_events(backchannel_interrupts: bool = False) -> list[dict]:
    events = [ev(0.64, 1, "vad_onset", at=0.45, during_reply=False),
              ev(1.8, 1, "user_text", text="Tell me a story.", final=True, full="Tell me a story.")]
    events += answer(1, 2.1, "Once upon a time there was a fox.", played_s=10.0)
    events += [ev(4.32, 2, "vad_onset", at=4.2, during_reply=True),
               ev(4.8, 2, "user_text", text="Mm-hmm.", final=False, candidate=True)]
    if backchannel_interrupts:
        events += [ev(5.0, 2, "turn_decision", state="ss", reason="backend", candidate=True, barge_in=True),
                   ev(5.0, 2, "interruption", reply_turn=1, heard_text="Once upon", unheard_text="a time",
                      decision_t=5.0, reason="barge_in")]
    else:
        events += [ev(5.0, 2, "turn_decision", state="el", backend_state="ss", reason="too_few_words",
                      candidate=True)]
    events += [ev(6.08, 3, "vad_onset", at=5.95, during_reply=True),
               ev(6.2, 3, "user_text", text="stop what", final=False, candidate=True),
               ev(6.4, 3, "turn_decision", state="ss", reason="backend", candidate=True, barge_in=True),
               ev(6.4, 3, "interruption", reply_turn=1, heard_text="Once upon a time", unheard_text="there was",
                  decision_t=6.4, flush_t=6.4, reason="barge_in"),
               ev(6.4, 3, "user_text", text="Stop.", final=False, candidate=False),
               ev(7.9, 3, "user_text", text=" What is 2 plus 2?", final=True, full="Stop. What is 2 plus 2?")]
    events += answer(3, 8.0, "Two plus two is four.")
    return events


def test_score_backchannel_ignored_and_barge_in_answered():
    rep = score(STORY, STORY_TL, story_events())
    by = {r["id"]: r for r in rep["utterances"]}
    assert by["ask"]["ok"] and by["ask"]["answered"] and by["ask"]["turns"] == [1]
    assert by["bc"]["ok"] and not by["bc"]["left_in_transcript"] and by["bc"]["transcript"] == "Mm-hmm."
    stop = by["stop"]
    assert stop["ok"] and stop["interrupted"] and stop["interrupt_ms"] == pytest.approx(500.0)
    assert stop["transcript"] == "Stop. What is 2 plus 2?" and stop["wer"] == 0.0
    assert stop["keywords_ok"] and stop["answer_text"] == "Two plus two is four."
    agg = rep["aggregate"]
    assert agg["ok"] and agg["backchannels"]["count"] == 1 and agg["backchannels"]["interruptions"] == 0
    assert agg["barge_ins"] == {"count": 1, "not_overlapped": 0, "interrupted": 1, "within_600ms": 1, "within_600ms_rate": 1.0,
                                "latency_ms_p50": 500.0, "latency_ms_max": 500.0, "wer": 0.0, "questions": 1,
                                "questions_answered": 1}
    assert agg["false_interruptions"] == 0 and agg["stray_turns"] == 0


def test_a_barge_in_that_the_answer_overlapped_only_as_it_ended_is_counted_apart():
    """The answer ended on its own 0.06 s after the user began: nothing to interrupt, whatever happened; 0.3 s of
    overlap is a barge-in."""
    for overlap, counted in ((0.06, False), (0.3, True)):
        tl = [dict(u) for u in STORY_TL]
        tl[2]["overlap_s"] = overlap
        rep = score(STORY, tl, story_events())
        bi = rep["aggregate"]["barge_ins"]
        assert (bi["count"], bi["not_overlapped"]) == ((1, 0) if counted else (0, 1)), overlap
        missed = [m for m in unmet(combine([rep])) if "as it ended" in m]
        assert len(missed) == (0 if counted else 1)


def test_score_a_backchannel_that_interrupts_fails():
    rep = score(STORY, STORY_TL, story_events(backchannel_interrupts=True))
    bc = rep["utterances"][1]
    assert not bc["ok"] and bc["interrupted"]
    assert rep["aggregate"]["backchannels"]["interruptions"] == 1 and rep["aggregate"]["false_interruptions"] == 1
    assert not rep["aggregate"]["ok"]


def test_unmet_names_the_missed_acceptance_figures():
    good = combine([score(STORY, STORY_TL, story_events())] * 20)
    good["backchannels"]["voices"] = ["en-us", "en-gb", "en+m3"]
    assert unmet(good) == []
    bad = combine([score(STORY, STORY_TL, story_events(backchannel_interrupts=True))])
    problems = unmet(bad)
    assert problems[0] == "backchannels: 1 in 1 voices over the assistant's speech (need 20 in 3)"
    assert problems[1] == "backchannels: 1 interrupted, 0 answered (need 0 and 0)"
    assert len(problems) == 2          # the barge-in itself was fine


def test_score_a_slow_barge_in_and_a_misheard_one():
    events = [dict(e, decision_t=6.8) if e["type"] == "interruption" else e for e in story_events()]
    events = [dict(e, full="is do after you") if e.get("final") and e["turn"] == 3 else e for e in events]
    rep = score(STORY, STORY_TL, events)
    stop = rep["utterances"][2]
    assert stop["interrupt_ms"] == pytest.approx(900.0) and stop["wer"] == pytest.approx(5 / 6, abs=1e-3)
    barge = rep["aggregate"]["barge_ins"]
    assert barge["within_600ms"] == 0 and barge["within_600ms_rate"] == 0.0 and barge["wer"] > 0.5


def test_score_ignored_alone_left_in_the_transcript_or_not():
    s = script({"id": "ahem", "text": "ahem", "timing": {"at_s": 0.5}, "expect": "ignored"})
    tl = timeline_of(s, [(0.5, 1.0)])
    heard = [ev(0.64, 1, "vad_onset", at=0.5, during_reply=False),
             ev(1.2, 1, "user_text", text="But um...", final=True, full="But um...")]
    rep = score(s, tl, heard + [ev(2.5, 1, "turn_decision", state="el", reason="silence_timeout")])
    assert rep["utterances"][0]["ok"] and rep["aggregate"]["ignored_alone"]["count"] == 1
    rep = score(s, tl, heard)                                 # no decision: the bubble stays
    assert rep["utterances"][0]["left_in_transcript"] and not rep["utterances"][0]["ok"]
    rep = score(s, tl, heard + answer(1, 2.5, "I'm sorry for your loss."))
    assert rep["utterances"][0]["answered"] and not rep["utterances"][0]["ok"]


JOIN = script({"id": "italy", "text": "Tell me the capital of Italy", "timing": {"at_s": 0.5}, "expect": "continued"},
              {"id": "germany", "text": "and also the capital of Germany.",
               "timing": {"after": "previous_end", "delay_s": 0.7}, "expect": "joins_previous",
               "keywords": {"any": ["berlin"]}})
JOIN_TL = timeline_of(JOIN, [(0.5, 2.0), (2.7, 4.2)])


def test_score_joins_previous():
    whole = "Tell me the capital of Italy and also the capital of Germany."
    joined = [ev(0.64, 1, "vad_onset", at=0.5, during_reply=False),
              ev(2.4, 1, "user_text", text="Tell me the capital of Italy.", final=True),
              ev(2.4, 1, "turn_decision", state="ss", reason="backend", candidate=False),
              ev(2.56, 1, "assistant_text", text="The capital"),              # generated, never played
              ev(2.88, 2, "vad_onset", at=2.7, during_reply=True),
              ev(4.5, 2, "user_text", text=whole, final=True, full=whole)]
    joined += answer(2, 4.6, "Rome and Berlin.")[1:]
    rep = score(JOIN, JOIN_TL, joined)
    italy, germany = rep["utterances"]
    assert germany["joined"]["ok"] and germany["joined"]["answer_turn"] == 2 and germany["ok"]
    assert germany["joined"]["coverage"] == [1.0, 1.0] and germany["joined_wer"] == 0.0
    assert italy["ok"] and rep["aggregate"]["joins"] == {"count": 1, "joined": 1}

    split = [ev(0.64, 1, "vad_onset", at=0.5, during_reply=False),
             ev(2.4, 1, "user_text", text="Tell me the capital of Italy.", final=True)]
    split += answer(1, 2.4, "The capital of Italy is Rome.")           # played while the user goes on
    split += [ev(2.88, 2, "vad_onset", at=2.7, during_reply=True),
              ev(4.5, 2, "user_text", text="and also the capital of Germany", final=True)]
    split += answer(2, 4.6, "Berlin.")[1:]
    rep = score(JOIN, JOIN_TL, split)
    italy, germany = rep["utterances"]
    assert not germany["ok"] and germany["joined"]["played_during_gap_s"] > 0
    assert germany["joined"]["replies_played"] == 2 and not italy["ok"]


def test_score_a_pause_inside_an_answered_utterance():
    s = script({"id": "germany", "text": "What is the capital of <pause 1.2> Germany?", "timing": {"at_s": 0.5},
                "expect": "answered", "keywords": {"any": ["berlin"]}})
    parts = {0: [{"text": "What is the capital of", "start_s": 0.5, "end_s": 1.7},
                 {"text": "Germany?", "start_s": 2.9, "end_s": 3.4}]}
    tl = timeline_of(s, [(0.5, 3.4)], parts=parts)
    whole = [ev(0.64, 1, "vad_onset", at=0.5), ev(2.0, 1, "vad_offset", at=1.7),
             ev(3.04, 1, "vad_onset", at=2.9, reopened=True),
             ev(3.8, 1, "user_text", text="What is the capital of Germany?", final=True)]
    rep = score(s, tl, whole + answer(1, 3.9, "Berlin is the capital of Germany."))
    r = rep["utterances"][0]
    assert r["ok"] and r["single_turn"]["ok"] and r["turns"] == [1]
    cut = [ev(0.64, 1, "vad_onset", at=0.5), ev(2.0, 1, "user_text", text="What is the capital of", final=True)]
    cut += answer(1, 2.2, "The capital of what?")
    cut += [ev(3.04, 2, "vad_onset", at=2.9, during_reply=True),
            ev(3.8, 2, "user_text", text="Germany?", final=True)] + answer(2, 3.9, "Berlin.")
    r = score(s, tl, cut)["utterances"][0]
    assert not r["ok"] and not r["single_turn"]["ok"] and r["turns"] == [1, 2] and r["keywords_ok"]


def test_score_stray_turns_and_an_input_opened_before_the_utterance():
    s = script({"id": "ask", "text": "Tell me a story.", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"id": "wait", "text": "Wait.", "timing": {"after": "answer_start", "delay_s": 3.0},
                "expect": "interrupts"})
    tl = timeline_of(s, [(0.5, 1.6), (6.0, 6.5)], overlapped={1})
    events = [ev(0.64, 1, "vad_onset", at=0.45)] + answer(1, 2.0, "Once upon a time.", played_s=10)
    events += [ev(3.2, 2, "vad_onset", at=3.1, during_reply=True),                    # echo: a stray turn
               ev(3.8, 2, "turn_decision", state="el", reason="backend", candidate=True),
               ev(5.6, 3, "vad_onset", at=5.5, during_reply=True),                    # opened by echo, then "wait"
               ev(6.7, 3, "user_text", text="Wait.", final=False, candidate=True),
               ev(6.7, 3, "turn_decision", state="ss", reason="backend", candidate=True, barge_in=True),
               ev(6.7, 3, "interruption", reply_turn=1, heard_text="", unheard_text="", decision_t=6.7)]
    rep = score(s, tl, events)
    assert rep["utterances"][1]["turns"] == [3] and rep["utterances"][1]["ok"]
    assert rep["utterances"][1]["interrupt_ms"] == pytest.approx(700.0)
    assert rep["aggregate"]["stray_turns"] == 1 and rep["stray_turns"][0]["turn"] == 2
    both = combine([rep, rep])
    assert both["conversations"] == 2 and both["stray_turns"] == 2 and both["barge_ins"]["count"] == 2


def test_score_a_turn_carried_on_into_a_later_utterance_counts_for_the_later_one():
    """A backchannel opens an input that stays open until a question continues it: the answer is the question's."""
    s = script({"id": "ask", "text": "Tell me a story.", "timing": {"at_s": 0.5}, "expect": "answered"},
               {"id": "bc", "text": "mm-hm", "timing": {"after": "answer_start", "delay_s": 1.0}, "expect": "ignored"},
               {"id": "spain", "text": "What is the capital of Spain?",
                "timing": {"after": "previous_end", "delay_s": 1.2}, "expect": "interrupts",
                "keywords": {"any": ["madrid"]}})
    tl = timeline_of(s, [(0.5, 1.6), (4.0, 4.6), (5.8, 7.3)], overlapped={1, 2})
    events = [ev(0.64, 1, "vad_onset", at=0.45)] + answer(1, 2.0, "Once upon a time.", played_s=10)
    events += [ev(4.16, 2, "vad_onset", at=4.0, during_reply=True),
               ev(5.12, 2, "vad_offset", at=4.7),
               ev(5.92, 2, "vad_onset", at=5.8, reopened=True),
               ev(6.6, 2, "turn_decision", state="ss", reason="backend", candidate=True, barge_in=True),
               ev(6.6, 2, "interruption", reply_turn=1, heard_text="Once", unheard_text="upon", decision_t=6.6),
               ev(7.6, 2, "user_text", text="Mm. What is the capital of Spain?", final=True)]
    events += answer(2, 7.7, "The capital of Spain is Madrid.")
    rep = score(s, tl, events)
    bc, spain = rep["utterances"][1:]
    assert bc["turns"] == spain["turns"] == [2] and bc["shared_with"] == ["spain"]
    assert bc["ok"] and not bc["answered"] and not bc["interrupted"] and not bc["left_in_transcript"]
    assert spain["ok"] and spain["interrupted"] and spain["interrupt_ms"] == pytest.approx(800.0)
    assert spain["answered"] and spain["keywords_ok"] and spain["left_in_transcript"]


def test_events_jsonl_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in story_events()) + "\n\n", encoding="utf-8")
    assert score(STORY, STORY_TL, read_events(path))["aggregate"]["ok"]


# ----------------------------------------------------------------------------------------------------------------
# text


def test_normalisation_wer_and_keywords():
    assert normalize("Stop. What's 2+2? It's 4!") == ["stop", "whats", "two", "plus", "two", "its", "four"]
    assert normalize("Mm-hm, 3.5 and 1,205") == ["mm", "hm", "three", "point", "five", "and", "one", "thousand",
                                                 "two", "hundred", "five"]
    assert number_words(0) == "zero" and number_words(90) == "ninety" and number_words(2024) == "two thousand twenty four"
    assert wer("Stop. What is two plus two?", "stop, what is 2 + 2") == {"wer": 0.0, "errors": 0, "words": 6}
    assert wer("Stop. What is two plus two?", "is do after you")["errors"] == 5
    assert wer("", "anything")["wer"] is None
    assert keywords_found("Two plus two is 4.", any_of=["four"])
    assert not keywords_found("Paris is lovely", any_of=["par"])
    assert keywords_found("New York and Paris", all_of=["new york", "paris"])
    assert not keywords_found("New Paris York", all_of=["new york"])
