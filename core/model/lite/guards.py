"""Guards for small chat models: a loop inside an answer, an answer that copies an earlier one.

A 135M model easily falls into repeating itself ("The answer is 1. The answer is 1. ...") or into giving the
previous answer again to a new question (it copies from its context). Both are cheap to detect on the token and
word level; what to do about them is decided in the backend (end the answer there; regenerate with the history
trimmed).
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_WORD = re.compile(r"[a-z0-9']+")


def loop_start(tokens: list[int], n: int) -> int | None:
    """Where a repetition begins, once the last ``n`` tokens already occurred earlier in ``tokens`` (else None).

    The repeated run is extended backwards as far as it matches its earlier copy, so the answer can be cut at the
    start of the repetition (``tokens[:cut]`` keeps one copy).
    """
    size = len(tokens)
    if n <= 0 or size < n + 1:
        return None
    tail = tokens[-n:]
    for j in range(size - n - 1, -1, -1):
        if tokens[j:j + n] == tail:
            distance = size - n - j
            start = size - n
            while start - 1 - distance >= 0 and tokens[start - 1] == tokens[start - 1 - distance]:
                start -= 1
            return start
    return None


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


COPY_MIN_WORDS = 4      # fewer words than this cannot be told from a chance likeness


def copies_earlier(answer: str, earlier: list[str], min_words: int = COPY_MIN_WORDS,
                   ratio: float = 0.8) -> int | None:
    """Index in ``earlier`` of an answer that ``answer`` (possibly still growing) largely repeats, else None.

    ``answer`` repeats an earlier answer when it has at least ``min_words`` words and its words match the
    beginning of that answer (as far as ``answer`` goes) with a similarity of at least ``ratio``; a complete answer
    that is a near-copy of any earlier one counts too.
    """
    mine = words(answer)
    if len(mine) < min_words:
        return None
    for index in range(len(earlier) - 1, -1, -1):
        theirs = words(earlier[index])
        if len(theirs) < min_words:
            continue
        head = theirs[: max(len(mine), min_words)]
        if SequenceMatcher(None, mine, head, autojunk=False).ratio() >= ratio:
            return index
    return None
