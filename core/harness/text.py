"""Text normalisation, word error rate and keyword matching for scoring conversations.

Normalisation: lower case; digits become words ("42" -> "forty two", "3.5" -> "three point five"), "+" "plus"; hyphens and
slashes split words ("mm-hm" -> "mm hm"); other punctuation and apostrophes go ("what's" -> "whats").
"""

from __future__ import annotations

import re

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
         "seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"), (100, "hundred"))


def number_words(n: int) -> str:
    """A non-negative integer in English words: 0 -> "zero", 1205 -> "one thousand two hundred five"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _digits(m: re.Match) -> str:
    whole, frac = m.group(1).replace(",", ""), m.group(2)
    words = number_words(int(whole))
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return f" {words} "


def normalize(text: str) -> list[str]:
    """The words of ``text`` after normalisation (see the module docstring)."""
    t = text.lower()
    t = re.sub(r"(\d[\d,]*)(?:\.(\d+))?", _digits, t)
    t = t.replace("+", " plus ")
    t = re.sub(r"[-/]", " ", t)
    t = re.sub(r"['\u2019]", "", t)
    t = re.sub(r"[^a-z0-9\s]", " ", t)
    return t.split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(reference: str, hypothesis: str) -> dict:
    """Word error rate of ``hypothesis`` against ``reference`` after normalisation: ``{"wer", "errors",
    "words"}`` (``wer`` None for an empty reference)."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    errors = edit_distance(ref, hyp)
    return {"wer": round(errors / len(ref), 4) if ref else None, "errors": errors, "words": len(ref)}


def recall(reference: str, hypothesis: str) -> float | None:
    """The share of the reference's words that occur in the hypothesis (order ignored); None for no words."""
    ref, hyp = normalize(reference), set(normalize(hypothesis))
    return round(sum(w in hyp for w in ref) / len(ref), 4) if ref else None


def contains(text: str, keyword: str) -> bool:
    """``keyword`` (one or more words, normalised) occurs in ``text`` as consecutive whole words."""
    words, key = normalize(text), normalize(keyword)
    if not key:
        return False
    return any(words[i:i + len(key)] == key for i in range(len(words) - len(key) + 1))


def keywords_found(text: str, any_of: tuple[str, ...] | list[str] = (), all_of: tuple[str, ...] | list[str] = ()
                   ) -> bool:
    """True when at least one of ``any_of`` (if given) and every one of ``all_of`` occur in ``text``."""
    if any_of and not any(contains(text, k) for k in any_of):
        return False
    return all(contains(text, k) for k in all_of)
