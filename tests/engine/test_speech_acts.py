"""core.speech_acts: what a short transcript is. Whisper writes a hum with any number of letters, so drawn-out
sounds never count as content words; real words that look alike still do."""

from __future__ import annotations

import pytest

from core.speech_acts import content_words, is_backchannel, is_command, is_command_alone, is_nonlexical


@pytest.mark.parametrize("text", ["Mm-hmm.", "Hmmmm.", "Mmmmm", "Uh-uh-uh", "Mm-mmm.", "Ahhhh!", "Ummmm...",
                                  "Hahaha", "uh-huh-huh", "Hm-hm.", "(coughs)", "M-M-A-K-M", "Ohhh, mhmm."])
def test_drawn_out_sounds_are_nonlexical_backchannels(text):
    assert is_nonlexical(text) and is_backchannel(text) and not content_words(text)


@pytest.mark.parametrize("text,words", [("Ham and eggs", ["ham", "eggs"]), ("Oh, hum a tune.", ["hum", "tune"]),
                                        ("Um, what is the capital of Spain?", ["what", "capital", "spain"]),
                                        ("Mmm, tell me about Rome.", ["tell", "about", "rome"]),
                                        ("1 is 2 plus 2.", ["1", "2", "plus", "2"]),    # numbers are words
                                        ("What is 12 times 3?", ["what", "12", "times", "3"])])
def test_real_words_that_look_alike_are_content(text, words):
    assert content_words(text) == words and not is_backchannel(text)


def test_commands_and_lexical_backchannels():
    assert is_command("Hmm, stop.") and not is_backchannel("Hmm, stop.")
    assert is_backchannel("Okay, I see.") and not is_nonlexical("Okay, I see.")   # words, but listening feedback


@pytest.mark.parametrize("text", ["Weight.", "weight", "Paws."])
def test_a_command_spelled_as_its_homophone_is_a_command(text):
    """Whisper has no context to choose the spelling of a lone word: "Wait." over the assistant's echo came back as
    "weight" and was dropped as too short for one content word."""
    assert is_command(text) and not is_backchannel(text) and not content_words(text)
    assert is_command_alone(text)


def test_a_command_alone_has_no_content_word():
    assert is_command_alone("Stop, stop.") and is_command_alone("Wait.")
    assert not is_command_alone("Stop. What is 2 plus 2?") and not is_command_alone("Okay.")


@pytest.mark.parametrize("text,feedback", [("Okay.", True), ("Mm-hmm.", True), ("and then Hm", True),
                                           ("I see, yes.", True), ("(laughs)", True), ("It's not.", False),
                                           ("I have one.", False), ("They make me a chair.", False)])
def test_feedback_is_a_backchannel_word_phrase_or_sound_anywhere(text, feedback):
    """What a candidate that did not take the turn held: feedback ends it at once; function words alone ("It's
    not.", Whisper's "Stop." over the echo) may be the start of a sentence the user goes on with."""
    from core.speech_acts import has_feedback

    assert has_feedback(text) is feedback
