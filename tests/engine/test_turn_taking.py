"""Turn-taking rules with the Lite profile's REAL weights, driven chunk by chunk through the capture chain on a
virtual clock: push-to-talk holds one turn open across pauses, speech that resumes before the answer is heard joins
the turn, and backchannels are not answered. Tests never assert wall-clock speed."""

from __future__ import annotations

import contextlib

import pytest

from _shared import chunks
from core.engine.conversation import Placed, espeak, mix

pytest.importorskip("core.model.lite.backend")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite():
    from core.compose.build import build_backend
    from core.compose.spec import ProfileSpec, SamplingSpec

    backend = build_backend(ProfileSpec(profile="lite", sampling=SamplingSpec(greedy=True, max_new_tokens=24)))
    yield backend
    backend.close()


class Drive:
    """An engine on a virtual clock fed the capture chain's chunks; ``model_delay_s`` holds speak steps back after
    each decision, as a real model's compute would (the fast mode has none)."""

    def __init__(self, backend, model_delay_s: float = 0.0) -> None:
        from core.engine.clock import VirtualClock
        from core.engine.engine import Engine
        from core.engine.events import EventBus, TurnDecision
        from core.engine.sink import VirtualAudioSink

        self.clock = VirtualClock()
        bus = EventBus(self.clock)
        self.events = bus.subscribe_queue(100_000)
        self.engine = Engine(backend, VirtualAudioSink(self.clock, backend.output_rate), bus=bus)
        self.engine.start()
        self.model_delay_s = model_delay_s
        self._decided_at = -1e9
        bus.subscribe(lambda ev: setattr(self, "_decided_at", self.clock.now())
                      if isinstance(ev, TurnDecision) and ev.state == "ss" else None)
        self.seen: list = []

    def feed(self, audio, actions: dict[int, object] | None = None) -> list:
        actions = actions or {}
        for k, chunk in enumerate(chunks(audio)):
            if k in actions:
                actions[k]()
            self.clock.set(chunk.t_start + 0.16)
            self.engine.process_chunk(chunk)
            if self.clock.now() - self._decided_at >= self.model_delay_s:
                while self.engine.wants_speak_step():
                    self.engine.speak_step()
        self.seen += self.events.drain()
        return self.seen


def _of(events, type_):
    return [e for e in events if e.type == type_]


def test_push_to_talk_holds_one_turn_across_a_long_pause_and_answers_on_release(lite):
    first, second = espeak("How many legs"), espeak("does a spider have?")
    audio = mix([Placed(0.4, first), Placed(0.4 + len(first) / 16_000 + 2.0, second)], tail_s=4.0)
    release_at = 0.4 + (len(first) + len(second)) / 16_000 + 2.0 + 0.4
    d = Drive(lite)
    k_release = int(release_at / 0.16)
    events = d.feed(audio, {1: lambda: d.engine.set_push_to_talk(True),
                            k_release: lambda: d.engine.set_push_to_talk(False)})
    decisions = [e for e in _of(events, "turn_decision") if e.state == "ss"]
    assert len(decisions) == 1 and decisions[0].reason == "push_to_talk"
    assert decisions[0].t >= k_release * 0.16          # not before the key came up
    final = [e.full or "" for e in _of(events, "user_text") if e.final][-1].lower()
    assert "legs" in final and "spider" in final                 # both parts, one turn
    assert "".join(e.text for e in _of(events, "assistant_text")).strip()


def test_a_release_after_silence_only_gives_a_hint(lite):
    d = Drive(lite)
    events = d.feed(mix([], tail_s=2.0), {1: lambda: d.engine.set_push_to_talk(True),
                                          8: lambda: d.engine.set_push_to_talk(False)})
    hints = [e for e in _of(events, "info") if e.get("kind") == "ptt_nothing_heard"]
    assert len(hints) == 1 and hints[0].notify
    assert not _of(events, "turn_decision") and not _of(events, "assistant_text")


def test_speech_resumed_before_the_answer_is_heard_joins_the_turn(lite):
    first, second = espeak("Tell me the capital of France."), espeak("And of Germany, please.")
    gap = 0.9            # the turn is decided in this pause; the "model" needs 1.5 s before it can speak
    audio = mix([Placed(0.4, first), Placed(0.4 + len(first) / 16_000 + gap, second)], tail_s=8.0)
    d = Drive(lite, model_delay_s=1.5)
    events = d.feed(audio)
    joined = [e for e in _of(events, "interruption") if e.reason == "joined"]
    assert len(joined) == 1 and joined[0].heard_text == ""
    turn = joined[0].reply_turn
    # one user turn holds the whole utterance, and it is answered once, after the resumed speech
    finals = [e for e in _of(events, "user_text") if e.final and e.turn == turn]
    whole = (finals[-1].full or "").lower()
    assert "france" in whole and "germany" in whole
    answered = [e for e in _of(events, "latency")]
    assert [e.turn for e in answered] == [turn]
    # the resumed speech opened a candidate, which went into the first turn instead of becoming a turn of its own
    others = [e for e in _of(events, "turn_decision") if e.turn != turn]
    assert others and all(e.state == "el" and e.reason == "joined" for e in others)


def test_a_short_continuation_joins_the_turn_however_few_words_it_has(lite):
    """"... and Germany?" after a pause is below every barge-in rule (one content word, under a second of voice) but
    it continues the user's own sentence: it joins the turn instead of being dropped as too short, and the whole
    sentence is heard (the pause is shortened for Whisper, which dropped what followed it)."""
    first, second = espeak("What is the capital of Italy"), espeak("and Germany?")
    audio = mix([Placed(0.4, first), Placed(0.4 + len(first) / 16_000 + 1.0, second)], tail_s=8.0)
    d = Drive(lite, model_delay_s=1.5)
    events = d.feed(audio)
    joined = [e for e in _of(events, "interruption") if e.reason == "joined"]
    assert len(joined) == 1, [e.to_dict() for e in _of(events, "turn_decision")]
    finals = [e for e in _of(events, "user_text") if e.final and e.turn == joined[0].reply_turn]
    assert "germany" in (finals[-1].full or "").lower(), [(e.turn, e.full) for e in _of(events, "user_text") if e.final]
    assert [e.turn for e in _of(events, "latency")] == [joined[0].reply_turn]


@pytest.mark.parametrize("backchannel", ["Okay.", "Yeah, right.", "I see."])
def test_a_backchannel_after_an_answer_that_asked_nothing_is_not_answered(lite, backchannel):
    q, ack = espeak("What is the capital of France?"), espeak(backchannel)
    audio = mix([Placed(0.4, q), Placed(9.0, ack)], tail_s=3.0)
    events = Drive(lite).feed(audio)
    answered = {e.turn for e in _of(events, "latency")}
    assert answered == {1}, [e.to_dict() for e in _of(events, "turn_decision")]
    dropped = [e for e in _of(events, "turn_decision") if e.turn > 1]
    assert dropped and all(e.state == "el" and e.reason in ("backchannel", "backend") for e in dropped)


def test_lite_says_how_sure_its_recogniser_was_and_the_engine_weighs_it(lite):
    """Over the assistant's echo Whisper makes words of a hum ("MMA Kim"); Lite passes the transcript's mean token
    log-probability with it, and a barge-in without a command whose transcript is that unsure does not interrupt,
    while a command does, whatever the confidence, and a sure one with content does."""
    from core.engine.engine import Engine, _Input
    from core.engine.sink import NullSink

    conv = lite.new_conversation()
    audio = mix([Placed(0.3, espeak("What is the capital of France?"))], tail_s=1.5)
    results = [lite.listen(conv, c.samples_16k, c.vad_probs) for c in chunks(audio)]
    final = next(r for r in results if r.final)
    assert final.state == "ss" and "france" in final.user_text.lower(), final
    assert final.text_logprob is not None and -1.5 < final.text_logprob <= 0.0, final

    engine = Engine(lite, NullSink())
    engine.start()
    try:
        def veto(text, logprob, windows=40):               # 40 windows: 1.28 s of voice, long enough for content
            inp = _Input(turn=2, opened_t=0.0, onset_sample=0, during_reply=True, user_text=text,
                         text_logprob=logprob)
            inp.voiced_windows = windows
            return engine._barge_in_veto(inp)

        assert veto("MMA Kim", -2.1) == "unsure"
        assert veto("MMA Kim", None) is None              # a profile that does not say: the word rules alone
        assert veto("Tell me about Rome", -0.6) is None
        assert veto("Wait.", -2.5) is None                # a command
        assert veto("Wait.", -2.5, 3) is None             # even with 96 ms of voice (over the echo)
        assert veto("Wait.", -2.5, 2) == "too_short"      # not with less: a click the recogniser made a word of
        # 28 windows: the 0.9 s of voice the VAD credited a barge-in question with over the echo
        assert veto("What is 2 plus 2?", -0.5, 28) is None          # three content words: a question, however short
        assert veto("1 is 2 plus 2.", -0.5, 28) is None             # numbers are words
        assert veto("They make me a chair.", -0.5, 28) == "too_short"   # two: maybe a backchannel made into words

        def not_a_turn(text, began_during_reply=True):      # the candidate's turn, once it has interrupted
            inp = _Input(turn=2, opened_t=0.0, onset_sample=0, during_reply=False, user_text=text,
                         began_during_reply=began_during_reply)
            return engine._not_a_turn(inp)

        assert not_a_turn("Wait.") == "command"            # it stopped the answer: nothing to answer
        assert not_a_turn("Stop, stop.") == "command"
        assert not_a_turn("Stop. What is 2 plus 2?") is None
        assert not_a_turn("Okay.") == "backchannel"
        assert not_a_turn("Wait.", began_during_reply=False) == "command"   # after an answer: hold on
        assert not_a_turn("What is 2 plus 2?", began_during_reply=False) is None
        engine.history.append({"role": "assistant", "content": "Shall I go on?"})
        assert not_a_turn("No.", began_during_reply=False) is None       # the user's answer to the question
        assert not_a_turn("Yeah.", began_during_reply=False) is None
        assert not_a_turn("No.") == "command"                            # over the question: it stopped it
    finally:
        engine.close()


@contextlib.contextmanager
def _answer_playing(lite, played_until: float):
    """An engine whose answer (turn 7, to speech that ended at 9.5 s) began playing at 10.0 s and has played until
    ``played_until`` on a virtual clock: yields (engine, that answer's reply)."""
    import threading

    import numpy as np

    from core.engine.alignment import ReplyTranscript
    from core.engine.clock import VirtualClock
    from core.engine.engine import Engine, _Reply
    from core.engine.sink import VirtualAudioSink

    clock = VirtualClock()
    rate = lite.output_rate
    sink = VirtualAudioSink(clock, rate)
    engine = Engine(lite, sink)
    engine.start()
    try:
        clock.set(10.0)
        sink.enqueue(np.full(3 * rate, 0.1, dtype=np.float32), rate, 7)
        clock.set(played_until)
        sink.advance(played_until)
        yield engine, _Reply(turn=7, cancel=threading.Event(), iterator=None, transcript=ReplyTranscript(rate),
                             decided_t=10.0, speech_end_t=9.5, user_text="Tell me the capital of Italy",
                             input_audio=[(np.zeros(2560, dtype=np.float32), np.zeros(5, dtype=np.float32))],
                             first_played_t=10.0)
    finally:
        engine.close()


def test_whether_speech_joins_the_turn_is_judged_when_the_user_resumed(lite):
    """Over the start of an answer the echo canceller is still learning, so the VAD may report resumed speech a few
    hundred milliseconds after it began. What decides whether it continues the user's turn is how much of the answer
    had played when they resumed, not when the onset was reported."""
    # 1.4 s of the answer has played by the time the onset is reported
    with _answer_playing(lite, played_until=11.4) as (engine, reply):
        assert engine._joins_previous_turn(reply, onset_t=10.6)         # resumed 0.6 s into the answer
        assert not engine._joins_previous_turn(reply, onset_t=11.2)     # 1.2 s in: the user heard the answer
        reply.first_played_t = None                                      # a sink that cannot say when it started
        assert not engine._joins_previous_turn(reply, onset_t=10.6)     # what has played so far counts


def test_when_the_user_resumed_is_read_from_the_voiced_windows_before_a_late_onset(lite):
    """Over the start of an answer, in the laptop room, "and also the capital of Germany." resumed 0.1 s into the
    answer, and silero heard it at once, but the VAD's echo checks made its onset wait 1.2 s: the answer had played
    too long for a join, and the continuation became a barge-in heard from its middle ("of capital of Germany.").
    The voiced windows that lead up to the onset say when the user resumed; a gap, or the end of the speech the
    answer is for, ends the look back."""
    w = 512 / 16_000
    with _answer_playing(lite, played_until=11.6) as (engine, reply):
        def voiced(*ends_s: float) -> None:
            engine._recent_voiced.clear()
            engine._recent_voiced.extend((round(t * 16_000), t) for t in ends_s)

        onset = round(11.2 * 16_000)
        # the earlier speech up to 9.5 s; resumed at 10.1 s with holes of up to 0.3 s; the onset at 11.2 s
        voiced(9.4, 9.45, 9.5, 10.1 + w, 10.1 + 2 * w, 10.45, 10.8, 11.2 + w)
        resumed = engine._resumed_t(reply, onset)
        assert resumed == pytest.approx(10.1)
        assert engine._joins_previous_turn(reply, resumed)
        assert not engine._joins_previous_turn(reply, 11.2)          # judged on the onset alone: no join
        voiced(10.1 + w, 10.1 + 2 * w, 11.2 + w)                     # a 1 s gap: the onset is when they resumed
        assert engine._resumed_t(reply, onset) == pytest.approx(11.2)
        voiced(9.45, 9.5, 9.8, 10.1, 10.4, 10.7, 11.0)               # a chain that runs into the earlier speech
        assert engine._resumed_t(reply, onset) == pytest.approx(9.8 - w)
        engine.config.join_lookback_gap_s = 0.0                      # off: the onset alone
        voiced(10.1 + w, 10.1 + 2 * w, 10.45, 10.8, 11.2 + w)
        assert engine._resumed_t(reply, onset) == pytest.approx(11.2)


def _candidate_over_an_answer(lite, first_part: str, pause_s: float = 0.7):
    """A long answer plays; 3 s into it the user says ``first_part``, pauses ``pause_s`` and asks a question."""
    ask = espeak("Tell me a long story about a dragon who lived in the sea.")
    part, question = espeak(first_part), espeak("What is two plus two?")
    at = 0.4 + len(ask) / 16_000 + 4.0
    audio = mix([Placed(0.4, ask), Placed(at, part), Placed(at + len(part) / 16_000 + pause_s, question)], tail_s=6.0)
    d = Drive(lite)
    return d.feed(audio)


def test_a_candidate_judged_at_a_pause_goes_on_when_the_user_does(lite):
    """"Look. [pause] What is two plus two?" over an answer: judged at the pause, "Look." is no barge-in (one content
    word, a third of a second of voice); the user resumes within candidate_grace_s, so the answer stays held and the
    whole utterance is listened to again as one candidate, which interrupts. Before, the answer played on for a
    moment in the pause and the question was a candidate of its own (or, with the VAD still in speech, was never
    heard)."""
    events = _candidate_over_an_answer(lite, "Look.")
    cut = [e for e in _of(events, "interruption") if e.reason == "barge_in"]
    assert len(cut) == 1, [e.to_dict() for e in _of(events, "turn_decision")]
    turn = cut[0].turn
    assert not [e for e in _of(events, "turn_decision") if e.turn == turn and e.state == "el"]
    held = [e for e in _of(events, "playback") if e.turn == turn]
    assert held and held[0].paused and all(e.paused for e in held), [e.to_dict() for e in held]
    finals = [e.full or "" for e in _of(events, "user_text") if e.final and e.turn == turn]
    assert "look" in finals[-1].lower() and "plus" in finals[-1].lower(), finals
    # what a transcript view shows of the turn never holds the first part twice
    from core.engine.turns import TurnLog

    log = TurnLog()
    for e in events:
        log.apply(e)
        shown = (log.turns[turn].user_text if turn in log.turns else "").lower()
        assert shown.count("look") <= 1, shown


def test_feedback_the_user_stopped_after_plays_on_at_once(lite):
    """"Okay. [pause] What is two plus two?": "Okay." is listening feedback, so the answer plays on as soon as it is
    judged; the question after the pause is a candidate of its own, and interrupts."""
    events = _candidate_over_an_answer(lite, "Okay.")
    dropped = [e for e in _of(events, "turn_decision") if e.state == "el" and e.candidate]
    assert dropped and dropped[0].reason in ("backchannel", "backend"), [e.to_dict() for e in dropped]
    resumed = [e for e in _of(events, "playback") if not e.paused and e.turn == dropped[0].turn]
    assert resumed
    cut = [e for e in _of(events, "interruption") if e.reason == "barge_in"]
    assert len(cut) == 1 and cut[0].turn > dropped[0].turn


def test_a_command_alone_stops_the_answer_and_is_not_answered(lite):
    """"Wait." over an answer stops it, and the assistant then listens: the command did what it asked, so it is not
    answered (reason ``command``), and nothing plays after it."""
    ask, wait = espeak("Tell me a long story about a dragon who lived in the sea."), espeak("Wait.")
    at = 0.4 + len(ask) / 16_000 + 4.0
    events = Drive(lite).feed(mix([Placed(0.4, ask), Placed(at, wait)], tail_s=6.0))
    cut = [e for e in _of(events, "interruption") if e.reason == "barge_in"]
    assert len(cut) == 1, [e.to_dict() for e in _of(events, "turn_decision")]
    turn = cut[0].turn
    closed = [e for e in _of(events, "turn_decision") if e.turn == turn and e.state == "el"]
    assert closed and closed[-1].reason == "command", [e.to_dict() for e in _of(events, "turn_decision")]
    assert [e.turn for e in _of(events, "latency")] == [cut[0].reply_turn]       # only the story was answered
    assert not [e for e in _of(events, "assistant_text") if e.turn >= turn]
    assert _of(events, "state")[-1].state == "listening"


def test_a_command_alone_after_an_answer_is_not_answered(lite):
    """"Wait." once the answer has ended asks the assistant to hold on, not to answer ("I'm here to help with any
    kind of creative writing project" before): the assistant goes on listening, and the next question is answered."""
    ask, wait, question = espeak("What is the capital of France?"), espeak("Wait."), espeak("What is two plus two?")
    at_wait = 0.4 + len(ask) / 16_000 + 7.0
    at_question = at_wait + len(wait) / 16_000 + 5.0
    events = Drive(lite).feed(mix([Placed(0.4, ask), Placed(at_wait, wait), Placed(at_question, question)],
                                  tail_s=6.0))
    decisions = [e.to_dict() for e in _of(events, "turn_decision")]
    assert not _of(events, "interruption"), decisions                   # the first answer had ended
    closed = [e for e in _of(events, "turn_decision") if e.state == "el" and e.reason == "command"]
    assert len(closed) == 1, decisions
    answered = [e.turn for e in _of(events, "latency")]
    assert len(answered) == 2 and closed[0].turn not in answered, decisions
    finals = [(e.full or "").lower() for e in _of(events, "user_text") if e.final and e.turn == answered[-1]]
    assert "plus" in finals[-1], finals


def test_a_command_then_a_question_after_a_pause_is_one_answered_turn(lite):
    """"Stop. [pause] What is two plus two?" over an answer: the barge-in may be decided on "Stop." alone, and the
    turn is then judged at the pause on "Stop."; it stays open, unanswered, for the grace, and the question that
    follows is heard with it as one turn and answered (the live loop once lost the question here)."""
    events = _candidate_over_an_answer(lite, "Stop.", pause_s=0.9)
    cut = [e for e in _of(events, "interruption") if e.reason == "barge_in"]
    assert len(cut) == 1, [e.to_dict() for e in _of(events, "turn_decision")]
    turn = cut[0].turn
    answered = [e.turn for e in _of(events, "latency")]
    assert answered == [cut[0].reply_turn, turn], [e.to_dict() for e in _of(events, "turn_decision")]
    finals = [(e.full or "").lower() for e in _of(events, "user_text") if e.final and e.turn == turn]
    assert "plus" not in finals[0] and "stop" in finals[-1] and "plus" in finals[-1], finals   # judged, then whole
    assert not [e for e in _of(events, "turn_decision") if e.turn == turn and e.state == "el"]


def _barge_in_in_a_room(lite, tmp_path, hold_on_onset: bool):
    """A story in the laptop room, and 3 s into it "Stop. What is two plus two?": (the barge-in's interruption,
    the first playback hold, the output audio, its rate)."""
    from core.audio.room import EchoRoom
    from core.engine.config import EngineConfig
    from core.engine.events import Interruption, Playback
    from core.engine.filemode import load_wav_16k, run_conversation

    ask, stop = espeak("Tell me a long story about a dragon who lived in the sea."), espeak("Stop. What is two plus two?")
    at = 0.4 + len(ask) / 16_000 + 3.4
    audio = mix([Placed(0.4, ask), Placed(at, stop)], tail_s=6.0)
    seen = []
    out = tmp_path / f"out{int(hold_on_onset)}.wav"
    run_conversation(lite, audio, out, config=EngineConfig(hold_on_onset=hold_on_onset), room=EchoRoom("laptop", 0),
                     subscribers=[seen.append])
    cut = [e for e in seen if isinstance(e, Interruption) and e.reason == "barge_in"]
    held = [e for e in seen if isinstance(e, Playback) and e.paused]
    assert len(cut) == 1 and held, [e.to_dict() for e in seen if e.type == "turn_decision"]
    import soundfile

    played, rate = soundfile.read(str(out), dtype="float32")
    return cut[0], held[0], played, rate, at


def test_the_answer_stops_at_the_onset_not_when_its_chunk_reaches_the_engine(lite, tmp_path):
    """The capture chain holds the answer the moment its VAD decides an onset over it (``Engine.hold_for_onset``);
    the engine, a chunk later, takes that hold as the candidate's pause. The answer is silent from the hold on, up
    to 160 ms before the chunk of the onset was processed; without the hold it stops on the chunk grid."""
    early, held, played, rate, at = _barge_in_in_a_room(lite, tmp_path, hold_on_onset=True)
    assert early.decision_t < held.t - 0.01                 # held inside the chunk, before the engine saw it
    assert early.decision_t > at                            # ... and after the user began
    a, b = int((early.decision_t + 0.005) * rate), int(held.t * rate)
    assert b > a and not played[a:b].any()                   # silent from the hold on
    late, held_late, _, _, _ = _barge_in_in_a_room(lite, tmp_path, hold_on_onset=False)
    assert late.decision_t == pytest.approx(held_late.t)    # on the chunk grid: when the engine paused
    assert early.decision_t < late.decision_t


def test_a_hold_at_an_onset_that_opens_no_candidate_lets_the_answer_play_on(lite):
    """An onset the chain held the answer for, whose chunk opens no candidate (the engine already has an input
    that is not a candidate): the answer plays on once that chunk is processed."""
    import numpy as np

    from core.audio.interfaces import AudioChunk
    from core.engine.engine import _Input

    with _answer_playing(lite, played_until=11.0) as (engine, reply):
        engine._reply = reply
        engine._input = _Input(turn=8, opened_t=10.9, onset_sample=0, during_reply=False, began_during_reply=False)
        engine.hold_for_onset(2560 * 3 + 100)
        assert engine.sink.paused
        silent = np.zeros(2560, dtype=np.float32)
        for k in range(4):
            engine.sink.clock.set(11.0 + 0.16 * (k + 1))
            engine.process_chunk(AudioChunk(samples_16k=silent, start=2560 * k, vad_probs=np.zeros(5, np.float32)))
            assert engine.sink.paused == (k < 3)             # settled with the chunk that holds the onset
        engine._reply = None
