"""Spoken arithmetic (core.model.lite.arithmetic): questions that are only a sum are answered exactly, by a
calculator, in the words Whisper writes them; anything else is left to the language model. The last two tests run
the real Lite weights: the answer is spoken and kept in the history like any other, and the next turn reuses the
KV cache that holds it."""

from __future__ import annotations

import threading

import pytest

from core.model.lite.arithmetic import answer
from lite_helpers import has_keyword


@pytest.mark.parametrize("question, expected", [
    ("What is two plus two?", "2 plus 2 is 4."),
    ("Stop. What is two plus two?", "2 plus 2 is 4."),                 # a barge-in's command before it
    ("Wait, what's 2+2?", "2 plus 2 is 4."),
    ("How much is 100 divided by 8?", "100 divided by 8 is 12.5."),
    ("What is 7 minus 10?", "7 minus 10 is negative 3."),
    ("What's fifteen times three?", "15 times 3 is 45."),
    ("What is one hundred and five plus twenty-five?", "105 plus 25 is 130."),
    ("What is 1,250 x 4?", "1250 times 4 is 5000."),
    ("What is the square root of 2?", "The square root of 2 is about 1.4142."),
    ("What is 20 percent of 50?", "20 percent of 50 is 10."),
    ("What is two plus two plus two times three?", "2 plus 2 plus 2 times 3 is 10."),   # times before plus
    ("What is 0.1 plus 0.2?", "0.1 plus 0.2 is 0.3."),                 # exact, not 0.30000000000000004
    ("Can you tell me what 9 times 9 is?", "9 times 9 is 81."),
    ("What does 6 times 7 equal?", "6 times 7 is 42."),
    ("Subtract 2 from 9.", "9 minus 2 is 7."),
    ("Multiply six by seven.", "6 times 7 is 42."),
    ("What is the sum of 4 and 5?", "4 plus 5 is 9."),
    ("Okay, so what is eighty-one divided by nine?", "81 divided by 9 is 9."),
    ("What is 1 divided by 3?", "1 divided by 3 is about 0.3333."),
    ("What is a thousand minus one?", "1000 minus 1 is 999."),
    ("Two plus two?", "2 plus 2 is 4."),
    ("What is 10 divided by 0?", "Dividing by zero has no answer."),
    ("What is 2 plus to?", "2 plus 2 is 4."),          # Whisper's homophone, where a number must stand
    ("Add 3 to 4.", "4 plus 3 is 7."),                  # ... and not where it is a word
])
def test_arithmetic_questions_are_answered_exactly(question, expected):
    assert answer(question) == expected


@pytest.mark.parametrize("question", [
    "What is the capital of France?", "What is 5?", "What is the time?", "How many days are there in a week?",
    "What is a plus b?", "Is two plus two four?", "One more thing.", "What is two three plus four?",
    "Tell me a story about two plus two.", "What is 2 to the power of 2 to the power of 9?", "", "   ", "?",
    "What is the square root of minus four?", "plus", "What is 3 plus?", "times times times",
])
def test_everything_else_is_left_to_the_language_model(question):
    assert answer(question) is None


def test_absurd_sums_get_a_sentence_not_a_number_nobody_can_say():
    assert answer("What is 99999999999 times 99999999999?") == \
        "99999999999 times 99999999999 is a number too large to say."
    long = "What is " + " plus ".join(["1"] * 200) + "?"
    assert answer(long) is None                                    # past the term limit: left to the model


@pytest.mark.slow
def test_a_spoken_sum_in_a_conversation_is_answered_right_and_the_next_turn_goes_on(backend):
    from core.model.lite.bench import espeak_question
    from core.model.lite.cli import answer_audio

    conv = backend.new_conversation()
    backend.submit_text(conv, "What is the capital of France?")
    first = "".join(p.text for p in backend.reply(conv, threading.Event()))
    assert "paris" in first.lower()

    audio, _ = espeak_question("Stop. What is three times four?", "en-gb", 165)
    trace, wav = answer_audio(backend, audio, conv=conv)
    assert has_keyword(trace["assistant_text"], r"(?<![\d,.])12(?![\d,])"), trace
    assert conv.state.last_reply.guards == ["calculator"]
    assert len(wav) > 0.5 * backend.output_rate                   # spoken, not only shown
    assert conv.history[-1] == {"role": "assistant", "content": trace["assistant_text"].strip()}

    backend.submit_text(conv, "What is the capital of Japan?")
    third = "".join(p.text for p in backend.reply(conv, threading.Event()))
    assert "tokyo" in third.lower()
    # the calculator's answer was in the KV cache: only the new turn was prefilled, not the history again
    assert conv.state.llm.last_prefill_tokens < 40, conv.state.llm.last_prefill_tokens


@pytest.mark.slow
def test_the_calculator_can_be_turned_off(backend):
    backend.settings.calculator = False
    try:
        conv = backend.new_conversation()
        backend.submit_text(conv, "What is two plus two?")
        "".join(p.text for p in backend.reply(conv, threading.Event()))
        assert "calculator" not in conv.state.last_reply.guards
    finally:
        backend.settings.calculator = True
