"""Shared helpers for the Lite tests: spoken test audio from espeak-ng, word error rate, keyword checks."""

from __future__ import annotations

import re
import shutil

import numpy as np

# (espeak voice, words per minute, question, keyword regex of a correct answer). Each question was checked in text
# mode with SmolLM2-135M-Instruct, greedy, default system prompt; voices/speeds vary across the set.
QUESTIONS = [
    ("en-us", 165, "What is the capital of France?", r"paris"),
    ("en-us+f3", 170, "What is the capital of Japan?", r"tokyo"),
    ("en-gb", 140, "What is the capital of Germany?", r"berlin"),
    ("en-us+m3", 180, "What is the largest ocean on Earth?", r"pacific"),
    ("en-us", 150, "Which planet is known as the red planet?", r"mars"),
    ("en-gb", 140, "What is the capital of Italy?", r"rome"),
    ("en-us+f3", 170, "What color is the sky on a clear day?", r"blue"),
    ("en-gb", 140, "How many legs does a spider have?", r"\b(8|eight)\b"),
]

_NUMBERS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
            "8": "eight", "9": "nine", "10": "ten", "100": "one hundred"}


def normalise(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    words = re.findall(r"[a-z0-9']+", text)
    out: list[str] = []
    for w in words:
        out.extend(_NUMBERS.get(w, w).split())
    return out


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level Levenshtein distance / reference length (after normalising case/digits)."""
    from core.harness.text import edit_distance

    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    errors = sum(wer(r, h) * len(normalise(r)) for r, h in pairs)
    return errors / max(1, sum(len(normalise(r)) for r, _ in pairs))


def has_keyword(answer: str, pattern: str) -> bool:
    return re.search(pattern, answer.lower()) is not None


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.float32)
