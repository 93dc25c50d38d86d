"""Shared helpers for the Lite tests: spoken test audio from espeak-ng, word error rate, keyword checks."""

from __future__ import annotations

import re
import shutil

import numpy as np

LLM_ENTRY = "smollm2-135m-instruct-q4_1-0.1.2-ogenai-int8"   # the built-in chat model's conversion-cache entry

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


# The accuracy set (issue 12): 30 simple factual questions with a keyword regex of a right answer, asked as text and
# (tests/lite/test_lite_e2e.py) spoken in several espeak-ng voices. Written for this project; none is from a benchmark.
ACCURACY_QUESTIONS = [
    ("What is the capital of France?", r"paris"),
    ("What is the capital of Japan?", r"tokyo"),
    ("What is the capital of Germany?", r"berlin"),
    ("What is the capital of Italy?", r"rome"),
    ("What is the capital of Spain?", r"madrid"),
    ("What is the capital of England?", r"london"),
    ("What is the largest ocean on Earth?", r"pacific"),
    ("Which planet is known as the red planet?", r"mars"),
    ("What color is the sky on a clear day?", r"blue"),
    ("How many legs does a spider have?", r"(?<![\d,.])(8|eight)(?![\d,])"),
    ("How many days are there in a week?", r"(?<![\d,.])(7|seven)(?![\d,])"),
    ("How many months are there in a year?", r"(?<![\d,.])(12|twelve)(?![\d,])"),
    ("What is the opposite of hot?", r"cold"),
    ("What is the opposite of day?", r"night"),
    ("What is the largest planet in our solar system?", r"jupiter"),
    ("What do bees make?", r"honey"),
    ("What gas do plants take in from the air?", r"carbon dioxide|co2"),
    ("What is frozen water called?", r"\bice\b"),
    ("What is the closest star to the Earth?", r"\bsun\b"),
    ("How many hours are there in a day?", r"(?<![\d,.])(24|twenty[- ]four)(?![\d,])"),
    ("What animal is known as the king of the jungle?", r"\blions?\b"),
    ("What is the boiling point of water in degrees Celsius?", r"(?<![\d,.])100(?![\d,])|hundred"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("What is the chemical symbol for gold?", r"\bau\b"),
    ("What color are bananas when they are ripe?", r"yellow"),
    ("How many continents are there?", r"(?<![\d,.])(7|seven)(?![\d,])"),
    ("What is the tallest mountain in the world?", r"everest"),
    ("What is the main language spoken in Brazil?", r"portuguese"),
    ("Which animal is the largest mammal?", r"blue whale|whale"),
    ("How many sides does a triangle have?", r"(?<![\d,.])(3|three)(?![\d,])"),
]
