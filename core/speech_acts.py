"""What a short utterance is, from its transcript: a backchannel, a command to stop, or something with content.

One vocabulary for the whole program (the engine's barge-in rules and Lite's end-of-turn rule use it), so the two
never disagree about "mm-hm". Pure functions of text; English only (the Lite profile's recogniser is English).

* A **backchannel** is listening feedback ("mm-hm", "uh-huh", "yeah", "okay", "right", "I see", "got it"),
  laughter ("haha", "(laughs)"), a cough or a hesitation ("ahem", "um"), or a recogniser's annotation of a noise
  ("[coughs]", "(music)"). It never takes the turn from a speaking assistant and is not answered.
* A **command** holds a word that asks the assistant to stop or wait ("stop", "wait", "hold on", "no"): it takes
  the turn even when it is short.
* Anything else with at least one **content word** (a word that is neither a backchannel nor a function word) is
  an utterance with content.

Whisper hears a lone "mm-hm" in many ways ("Mm-hmm.", "Hmm.", "and then Hm", "M-M-A-K-M"): letters spelled one by
one and function words around a backchannel do not make content.
"""

from __future__ import annotations

import re

BACKCHANNEL_WORDS = frozenset({
    "mm", "mmm", "mmmm", "hm", "hmm", "hmmm", "mhm", "mhmm", "mm-hm", "mm-hmm", "mmhm", "mmhmm", "uh-huh", "uh-uh",
    "uhhuh", "huh", "uh", "um", "umm", "uhm", "er", "erm", "ah", "oh", "ooh", "aha", "ahh", "ahem", "hmph",
    "yeah", "yea", "yes", "yep", "yup", "ya", "okay", "ok", "k", "right", "sure", "alright", "fine", "cool", "nice",
    "wow", "great", "good", "interesting", "really", "indeed", "exactly", "totally", "absolutely", "gotcha",
    "ha", "haha", "hahaha", "hehe", "heh", "lol", "cough", "coughs", "coughing", "laughs", "laughing", "laughter",
    "sigh", "sighs", "sniff", "sneeze", "throat", "clears",
})
# Sounds rather than words: hesitations, hums, laughter, coughs. Alone they are never a turn, whatever came before.
NONLEXICAL = frozenset({
    "mm", "mmm", "mmmm", "hm", "hmm", "hmmm", "mhm", "mhmm", "mm-hm", "mm-hmm", "mmhm", "mmhmm", "uh-huh", "uhhuh",
    "uh-uh", "huh", "uh", "um", "umm", "uhm", "er", "erm", "ah", "ahh", "oh", "ooh", "ahem", "hmph", "ha", "haha",
    "hahaha", "hehe", "heh", "cough", "coughs", "coughing", "laughs", "laughing", "laughter", "sigh", "sighs",
    "sniff", "sneeze", "throat", "clears", "music", "silence", "noise", "inaudible", "blank_audio",
})
# Phrases whose words would otherwise count as content ("see", "know", "makes", "sense").
BACKCHANNEL_PHRASES = (
    "i see", "i know", "got it", "makes sense", "that makes sense", "that's right", "that is right", "oh really",
    "no way", "of course", "all right", "go on", "i understand", "fair enough", "sounds good", "that's true",
    "thank you", "thanks", "i got it", "oh okay", "oh i see", "uh huh", "mm hmm", "mm hm", "oh wow", "you know",
)
COMMAND_WORDS = frozenset({
    "stop", "wait", "pause", "hold", "quiet", "enough", "no", "nope", "cancel", "shut", "hush", "halt", "sorry",
    "excuse", "actually", "listen",
    # the same sounds as a command, as a recogniser may spell them with no context to tell ("Wait." -> "weight")
    "weight", "paws",
})
FUNCTION_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "so", "then", "than", "that", "this", "these", "those", "it", "its",
    "it's", "i", "i'm", "me", "my", "you", "your", "we", "they", "he", "she", "him", "her", "them", "is", "are",
    "was", "were", "be", "been", "am", "do", "did", "does", "to", "of", "in", "on", "at", "for", "with", "as", "by",
    "from", "up", "just", "well", "like", "also", "too", "very", "there", "here", "now", "oh", "can", "could",
    "will", "would", "should", "shall", "may", "might", "must", "have", "has", "had", "get", "got", "go", "more",
    "some", "any", "all", "not", "if", "come", "came", "let", "let's", "i'll", "i've", "i'd", "you're", "you'll",
    "you've", "we're", "we'll", "they're", "he's", "she's", "that's", "there's", "gonna", "wanna", "gotta", "um",
    "uh", "hey",
})

_ANNOTATION = re.compile(r"[\[(*♪][^\])*♪]*[\])*♪]")
_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")


def words(text: str) -> list[str]:
    """Lower-case words of a transcript; annotations such as ``[coughs]`` or ``(laughs)`` become one word each."""
    lowered = text.lower()
    notes = [w for note in _ANNOTATION.findall(lowered) for w in _WORD.findall(note)[:1]]
    return notes + _WORD.findall(_ANNOTATION.sub(" ", lowered))


def _spelled(word: str) -> bool:
    """Letters spelled one by one ("m-m-a-k-m"), Whisper's rendering of a hum. A number is a word, however short
    ("What is 2 plus 2?")."""
    if word.replace("-", "").isdigit():
        return False
    parts = word.split("-")
    return len(word.replace("-", "").replace("'", "")) < 2 or all(len(p) <= 1 for p in parts)


# A drawn-out sound rather than a word, each hyphen-separated part: "mmmm", "hmmmm", "mhmm", "ahhh", "ohhh",
# "ummm", "uhhh", "erm", "hahaha", "mm-mmm", "uh-uh-uh" (Whisper writes hums with any number of letters).
_HUM = re.compile(r"(?:m+|h+m+|m+h+m*|u+h+m*|a+h+|o+h+|u+m+|e+r+m*|h+u+h+|h?(?:ha)+h?|hmph)")


def _hum(word: str) -> bool:
    return all(_HUM.fullmatch(part) for part in word.split("-"))


def _padded(text: str) -> str:
    """Lower case, annotations and punctuation blanked, a space at each end: " i see " matches as a phrase."""
    return " " + re.sub(r"[^a-z0-9' -]+", " ", _ANNOTATION.sub(" ", text.lower())) + " "


def _without_phrases(text: str) -> str:
    lowered = _padded(text)
    for phrase in sorted(BACKCHANNEL_PHRASES, key=len, reverse=True):
        while f" {phrase} " in lowered:           # "thank you, thank you": each one
            lowered = lowered.replace(f" {phrase} ", "  ")
    return lowered


def content_words(text: str) -> list[str]:
    """Words that carry content: not backchannels, not function words, not spelled letters, not in a
    backchannel phrase."""
    return [w for w in _WORD.findall(_without_phrases(text))
            if not _spelled(w) and not _hum(w) and w not in BACKCHANNEL_WORDS and w not in FUNCTION_WORDS
            and w not in COMMAND_WORDS]


def command_words(text: str) -> list[str]:
    """The words of ``text`` that ask the assistant to stop or wait."""
    return [w for w in _WORD.findall(_without_phrases(text)) if w in COMMAND_WORDS]


def is_command(text: str) -> bool:
    """The utterance asks the assistant to stop or wait."""
    return bool(command_words(text))


def is_command_alone(text: str) -> bool:
    """A command and no content word ("Wait.", "Stop, stop."): it asks only that the assistant stop or wait."""
    return is_command(text) and not content_words(text)


def is_nonlexical(text: str) -> bool:
    """Only sounds: hums, hesitations, laughter, coughs, noise annotations (an empty transcript too)."""
    ws = [w for w in words(text) if not _spelled(w)]
    return all(w in NONLEXICAL or _hum(w) for w in ws)


def has_feedback(text: str) -> bool:
    """Some of it is listening feedback or a sound: a backchannel word or phrase ("okay", "I see"), a hum, a
    laugh, a noise annotation. "It's not." has none (function words only: maybe the start of a sentence)."""
    lowered = _padded(text)
    if any(f" {phrase} " in lowered for phrase in BACKCHANNEL_PHRASES):
        return True
    return any(w in BACKCHANNEL_WORDS or w in NONLEXICAL or _hum(w) for w in words(text) if not _spelled(w))


def is_backchannel(text: str) -> bool:
    """Listening feedback, laughter, a cough or noise: no content word and no command (an empty transcript too)."""
    return not content_words(text) and not is_command(text)
