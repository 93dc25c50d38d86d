"""Scenario tests of the engine with the Lite profile and its REAL weights (Whisper tiny.en, SmolLM2-135M, Piper),
through ``parley chat`` on conversations built from espeak-ng sentences, on the virtual clock (fast mode).

What they prove:
(a) two questions in a row get two answers, each with its state sequence and latency;
(b) a second utterance placed while the first answer plays stops it: playback is held at the user's onset and the
    flush comes in the listen step that decides the barge-in, nothing of that answer is played afterwards, the
    unheard text is reported and the heard + unheard text is the generated text, and the new question is answered;
(c) a cough and a short "mm hm" during an answer do not interrupt it: the whole answer is played;
(d) a 30-turn conversation keeps the context under the configured limit (rebuilds happen) and the process memory
    flat.
Tests never assert wall-clock speed.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from _chat import of_type, parley_chat
from core.engine.conversation import Placed, cough, espeak, mix, sequential

pytest.importorskip("core.model.lite.backend")
pytestmark = pytest.mark.slow

STORY = "Tell me a story about a cat."
SPIDER = "How many legs does a spider have?"
LONG = {"backend": {"max_new_tokens": 40}}
ARGS = ["--greedy"]


def _answer_text(events, turn: int) -> str:
    return "".join(e.text for e in of_type(events, "assistant_text") if e.turn == turn)


def _audio_out_s(events, turn: int) -> float:
    return sum(e.seconds for e in of_type(events, "audio_out") if e.turn == turn)


def _played(events, turn: int) -> int:
    played = [e.total for e in of_type(events, "audio_played") if e.turn == turn]
    return played[-1] if played else 0


def _speaking_at(events, turn: int) -> float:
    return next(e.t for e in of_type(events, "state") if e.turn == turn and e.state == "speaking")


@pytest.fixture(scope="module")
def clips():
    return {"story": espeak(STORY), "spider": espeak(SPIDER), "mmhm": espeak("mm hm", speed=140)}


@pytest.fixture(scope="module")
def two_questions(tmp_path_factory, clips):
    audio = mix(sequential([clips["story"], clips["spider"]], gap_s=16.0), tail_s=1.0)
    summary, events, out = parley_chat(tmp_path_factory.mktemp("lite_a"), audio, "lite", settings=LONG,
                                       extra=ARGS)
    return audio, summary, events, out


def test_two_questions_get_two_answers(two_questions):
    _, summary, events, out = two_questions
    assert summary["errors"] == 0 and summary["interruptions"] == 0
    assert summary["turns"] == 2 and summary["answers"] == 2
    decisions = [(e.turn, e.state) for e in of_type(events, "turn_decision")]
    assert decisions == [(1, "ss"), (2, "ss")]
    finals = [e.full.lower() for e in of_type(events, "user_text") if e.get("final")]
    assert "cat" in finals[0] and "spider" in finals[1]
    assert "8" in _answer_text(events, 2) or "eight" in _answer_text(events, 2).lower()
    for turn in (1, 2):
        assert _answer_text(events, turn).strip()
        states = [e.state for e in of_type(events, "state") if e.turn == turn]
        assert states[:4] == ["user_speaking", "thinking", "speaking", "listening"]
        assert _played(events, turn) > 0
        lat = [e for e in of_type(events, "latency") if e.turn == turn]
        assert len(lat) == 1 and lat[0].first_audio_ms >= 0
        assert lat[0].first_played_ms >= lat[0].first_audio_ms
    # Every generated sample was played (nothing cut) and the output WAV holds it on the input's timeline.
    for turn in (1, 2):
        total = sum(e.samples for e in of_type(events, "audio_out") if e.turn == turn)
        assert _played(events, turn) == total
    wav, rate = sf.read(str(out), dtype="float32")
    assert rate == 22_050
    start = int(_speaking_at(events, 1) * rate)
    assert np.abs(wav[:start]).max() == 0.0                      # silence before the first answer
    assert np.abs(wav[start:start + rate]).max() > 0.05          # the answer is audible from there


def test_interruption_stops_the_answer_and_reports_the_unheard_text(tmp_path, two_questions, clips):
    audio_a, _, events_a, _ = two_questions
    answer_start = _speaking_at(events_a, 1)
    answer_len = _audio_out_s(events_a, 1)
    assert answer_len > 6.0, "the story answer must be long enough to be interrupted"
    # The same first question, then the second one 1.5 s into the answer (on the virtual clock): past
    # join_max_played_s, so it interrupts rather than continuing the first turn (when the user resumed is judged
    # from their first voiced window, not from the VAD's onset).
    story_at = 0.5
    audio = mix([Placed(story_at, clips["story"]), Placed(answer_start + 1.5, clips["spider"])], tail_s=10.0)
    summary, events, out = parley_chat(tmp_path, audio, "lite", settings=LONG, extra=ARGS)
    assert summary["errors"] == 0
    [cut] = of_type(events, "interruption")
    assert cut.reply_turn == 1 and cut.turn == 2
    decision = next(e for e in of_type(events, "turn_decision") if e.get("barge_in"))
    assert decision.turn == 2 and decision.state == "ss"
    # The flush happened in the listen step that decided: within one chunk of the decision.
    assert 0.0 <= cut.t - decision.t <= 0.16
    # Playback was held when the user started speaking (decision_t: what the user heard as the assistant's stop;
    # the capture chain held it at the VAD's onset, up to a chunk before the engine's pause event); the answer was
    # cut once the transcript showed a barge-in.
    [pause] = [e for e in of_type(events, "playback") if e.paused and e.reply_turn == 1]
    assert pause.t - 0.16 - 1e-6 <= cut.decision_t <= pause.t + 1e-6 and cut.flush_t >= cut.decision_t
    # Nothing more of answer 1 was played after the hold: the output is silent from then until the flush (what
    # played between the last report and the hold is reported with the flush).
    wav, rate = sf.read(str(out), dtype="float32")
    a, b = int((cut.decision_t + 0.005) * rate), int(cut.flush_t * rate)
    assert b > a and np.abs(wav[a:b]).max() == 0.0
    total_1 = sum(e.samples for e in of_type(events, "audio_out") if e.turn == 1)
    assert _played(events, 1) < total_1
    # Heard + unheard = what was generated; the unheard part is not empty.
    generated = _answer_text(events, 1).strip()
    heard, unheard = cut.heard_text, cut.unheard_text
    assert unheard and generated.startswith(heard)
    assert " ".join((heard + " " + unheard).split()) == " ".join(generated.split())
    # The answer was played up to the interruption: the heard part covers about the played time.
    assert 0.5 < cut.played_s < answer_len
    # The output is silent from just after the flush until the next answer starts.
    wav, rate = sf.read(str(out), dtype="float32")
    next_start = _speaking_at(events, 2)
    quiet = wav[int((cut.t + 0.02) * rate):int(next_start * rate)]
    assert len(quiet) == 0 or np.abs(quiet).max() < 1e-3
    # The interrupting question is then answered.
    assert "8" in _answer_text(events, 2) or "eight" in _answer_text(events, 2).lower()
    states = [e.state for e in of_type(events, "state")]
    assert "interrupted" in states


@pytest.fixture(scope="module")
def noises_during_answer(tmp_path_factory, two_questions, clips):
    _, _, events_a, _ = two_questions
    answer_start = _speaking_at(events_a, 1)
    answer_len = _audio_out_s(events_a, 1)
    assert answer_len > 4.0
    audio = mix([Placed(0.5, clips["story"]), Placed(answer_start + 0.8, cough(0.3, seed=1)),
                 Placed(answer_start + 2.2, clips["mmhm"])], tail_s=answer_len + 2.0)
    summary, events, _ = parley_chat(tmp_path_factory.mktemp("lite_c"), audio, "lite", settings=LONG, extra=ARGS)
    return summary, events, events_a


def test_cough_and_mm_hm_during_an_answer_do_not_interrupt_it(noises_during_answer):
    summary, events, _ = noises_during_answer
    assert summary["errors"] == 0
    assert not of_type(events, "interruption")
    # The whole answer was played.
    total = sum(e.samples for e in of_type(events, "audio_out") if e.turn == 1)
    assert _played(events, 1) == total and total > 0
    # Whatever the noises opened was dropped without an answer.
    answered = {e.turn for e in of_type(events, "latency")}
    assert answered == {1}
    dropped = [e for e in of_type(events, "turn_decision") if e.get("candidate")]
    assert all(e.state == "el" for e in dropped)


def test_a_dropped_candidate_leaves_the_running_answer_unchanged(noises_during_answer):
    _, events, events_a = noises_during_answer
    assert _answer_text(events, 1) == _answer_text(events_a, 1)


QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "What colour is the sky?",
             "What do bees make?", "Which planet is red?", "What is two plus two?", "Where does the sun rise?",
             "Name a large animal.", "What is ice made of?", "How many days are in a week?"]


def test_thirty_turns_keep_the_context_under_the_limit_and_memory_flat(tmp_path):
    limit = 400
    clips = [espeak(q) for q in QUESTIONS]
    turns = [clips[i % len(clips)] for i in range(30)]
    audio = mix(sequential(turns, gap_s=6.0), tail_s=1.0)
    settings = {"max_context_tokens": limit, "backend": {"max_new_tokens": 8}}
    summary, events, _ = parley_chat(tmp_path, audio, "lite", settings=settings, extra=ARGS)
    assert summary["errors"] == 0
    assert summary["answers"] >= 28
    ends = [e for e in of_type(events, "context") if e.kind == "turn_end"]
    rebuilds = [e for e in of_type(events, "context") if e.kind == "rebuild"]
    assert len(ends) >= 28 and rebuilds
    assert max(e.context_tokens for e in ends) <= limit
    for e in rebuilds:
        assert e.after_tokens < e.before_tokens
    rss = [e.rss_mb for e in ends if e.get("rss_mb") is not None]
    assert len(rss) >= 28
    # Flat: no steady growth. (The allocator keeps a little more after each context rebuild; that levels off.)
    second_half = max(rss[14:]) - rss[14]
    last_turns = max(rss[-8:]) - rss[-8]
    assert second_half < 40 and last_turns < 15, f"RSS per turn (MB): {rss}"
