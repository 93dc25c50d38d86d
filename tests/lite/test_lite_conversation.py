"""Conversations with the real weights and the DEFAULT settings (issue 12's "Done when"): accuracy of the converted
model against the figure of the previous torch float32 runtime, spoken accuracy beside it, several turns that must
not repeat each other, a follow-up that needs the previous turn, a story, and personas that really change answers.

Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import threading

import pytest

from core.model.lite.guards import copies_earlier, words
from lite_helpers import ACCURACY_QUESTIONS, corpus_wer, has_keyword

pytestmark = pytest.mark.slow

# SmolLM2-135M-Instruct on ACCURACY_QUESTIONS, asked as text, greedy, default system prompt, with the previous runtime
# (the Q4_1 GGUF dequantised to float32 and run by transformers/torch; measured before the switch, docs/lite.md).
TORCH_FP32_TEXT_SCORE = 25
VOICES = [("en-us", 165), ("en-us+f3", 175), ("en-gb", 150), ("en-us+m3", 185), ("en-gb+f4", 160)]


def _ask(backend, conv, text: str) -> str:
    backend.submit_text(conv, text)
    return "".join(p.text for p in backend.reply(conv, threading.Event())).strip()


def test_text_accuracy_of_the_converted_model_and_spoken_accuracy_beside_it(backend):
    from core.model.lite.bench import espeak_question
    from core.model.lite.cli import answer_audio

    text_ok, spoken_ok, pairs, misses = 0, 0, [], []
    for i, (question, keyword) in enumerate(ACCURACY_QUESTIONS):
        answer = _ask(backend, backend.new_conversation(), question)
        text_ok += has_keyword(answer, keyword)
        voice, wpm = VOICES[i % len(VOICES)]
        audio, _ = espeak_question(question, voice, wpm)
        trace, _ = answer_audio(backend, audio)
        spoken = has_keyword(trace["assistant_text"], keyword)
        spoken_ok += spoken
        pairs.append((question, trace["user_text"]))
        if not spoken:
            misses.append(f"  {voice:9s} heard {trace['user_text']!r} -> {trace['assistant_text'][:70]!r}")
    n = len(ACCURACY_QUESTIONS)
    print(f"\ntext accuracy (onnxruntime-genai int8, greedy): {text_ok}/{n}; torch float32 before: "
          f"{TORCH_FP32_TEXT_SCORE}/{n}")
    print(f"spoken accuracy ({len(VOICES)} espeak-ng voices, default settings): {spoken_ok}/{n}; "
          f"question WER {corpus_wer(pairs):.3f}")
    print("\n".join(misses))
    assert n >= 25
    assert text_ok >= TORCH_FP32_TEXT_SCORE - 1
    # Printed, with a floor well above the 9/25 the issue measured before: the misses are recognition errors of
    # Whisper tiny.en on espeak-ng voices (listed above), measured 18/30 here
    assert spoken_ok >= n // 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_turn_with_default_settings(backend, seed):
    """No answer repeats an earlier one, a follow-up that needs the previous turn is answered right, a story
    request gets a story. (The default sampling is greedy, so the seed changes nothing: checked, not assumed.)"""
    backend.settings.seed = seed
    try:
        conv = backend.new_conversation()
        turns = ["What is the capital of France?", "And what is its population?", "Who wrote Romeo and Juliet?",
                 "When was he born?", "Tell me a short story about a dragon."]
        answers = []
        for turn in turns:
            answers.append(_ask(backend, conv, turn))
            print(f"\n  [{seed}] {turn!r} -> {answers[-1]!r} {conv.state.last_reply.guards}", end="")
    finally:
        backend.settings.seed = 0
    for i, answer in enumerate(answers):
        assert answer, f"turn {i} got no answer"
        assert copies_earlier(answer, answers[:i]) is None, f"turn {i} repeats an earlier answer: {answer!r}"
    assert "paris" in answers[0].lower()
    assert "shakespeare" in answers[2].lower()
    assert "1564" in answers[3]                                  # "he" is Shakespeare: the previous turn is used
    story = answers[4].lower()
    assert len(words(story)) >= 25 and "dragon" in story
    assert any(w in words(story) for w in ("once", "was", "lived", "there", "named", "day"))


def test_two_personas_answer_the_same_question_differently(backend):
    question = "Who are you?"
    plain = _ask(backend, backend.new_conversation(), question)
    pirate = _ask(backend, backend.new_conversation(
        system_prompt="You are Captain Jack, a pirate. Always talk like a pirate and say arr."), question)
    print(f"\n  default persona: {plain!r}\n  pirate persona:  {pirate!r}")
    assert plain != pirate
    assert any(w in pirate.lower() for w in ("pirate", "arr", "captain", "jack", "matey", "ahoy"))
    rendered = backend.llm.tokenizer.decode(backend.llm.render([{"role": "system", "content": "You are Captain "
                                                                                             "Jack."}]))
    assert "You are Captain Jack." in rendered                  # the persona is in the template, not dropped


def test_the_same_question_asked_again_may_get_the_same_answer(backend):
    """The copy guard leaves alone answers to a question asked before: repeating them is right."""
    conv = backend.new_conversation()
    first = _ask(backend, conv, "What is the capital of Japan?")
    _ask(backend, conv, "How many legs does a spider have?")
    again = _ask(backend, conv, "What is the capital of Japan?")
    assert "tokyo" in first.lower() and "tokyo" in again.lower()
    assert conv.state.last_reply.guards == []


def _story_after(backend, exchanges: list[tuple[str, str]], request: str):
    """Ask ``request`` in a conversation whose history holds ``exchanges`` (question, answer as heard): the answer
    is a whole one of its own (not ended by the copy guard, no copy of those answers, said as shown)."""
    conv = backend.new_conversation()
    for question, answer in exchanges:
        conv.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    story = _ask(backend, conv, request)
    reply = conv.state.last_reply
    print(f"\n  {request!r} -> {story!r} {reply.guards}")
    assert "copy-ended" not in reply.guards
    assert copies_earlier(story, [answer for _, answer in exchanges]) is None
    assert len(words(story)) >= 25
    assert words(" ".join(seg["text"] for seg in reply.segments)) == words(story)   # said as shown
    return conv, story, reply


def test_an_answer_that_would_copy_an_earlier_one_is_regenerated_before_a_word_of_it_is_said(backend):
    """Met in the conversation suite (laptop room): after the misheard "Once is the capital of staying." had been
    answered "The maker, Max, is a master of staying.", SmolLM2 began the next two answers, to "Tell me a long
    story about a trip to the moon." and "Wait, what is the capital of Japan?", with that answer again. Their first
    clause, "The maker,", was too short for the copy guard and was spoken; when the next clause showed the copy, the
    answer could only be ended there, and the user heard "The maker," and nothing more. Now the first clauses wait
    for words enough to judge, so the copy is regenerated before anything is said."""
    conv, story, _ = _story_after(backend, [
        ("Tell me a long story about a maker who makes red.", "The maker, a man named Max who creates"),
        ("Once is the capital of staying.", "The maker, Max, is a master of staying.")],
        "Tell me a long story about a trip to the moon.")
    assert "moon" in story.lower()
    japan = _ask(backend, conv, "Wait, what is the capital of Japan?")
    print(f"  japan: {japan!r} {conv.state.last_reply.guards}")
    assert "tokyo" in japan.lower()


def test_an_answer_that_starts_copying_an_earlier_one_later_goes_on_instead_of_stopping(backend):
    """Tried as a user: "Tell me a story about a little boat." (heard "... a little mode.") after a story about a
    brave knight got "The story of a little mode is one", then the answer went on as the first story had ("... that
    has been passed down through generations") and the copy guard could only end it there, in mid-sentence. The
    first clause had already been spoken, so the answer now goes on from it with the history trimmed."""
    _, _, reply = _story_after(backend, [
        ("Tell me a long story about a brave night.",
         "The story of a brave night is one that has been passed down through generations. It's a tale of courage, "
         "sacrifice, and the unforgiving beauty of nature."),
        ("What is the capital on France?", "The capital of France is Paris.")],
        "Tell me a story about a little mode.")
    assert "copy-continued" in reply.guards
