"""Text for the ear: strip what cannot be spoken, and cut the answer stream into clauses for early synthesis."""

from __future__ import annotations

import re
import unicodedata

_CODE_BLOCK = re.compile(r"```.*?(```|$)", re.S)
_MD_LINK = re.compile(r"\[([^\]]*)\]\((?:[^)]*)\)")
_URL = re.compile(r"\b(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|io|dev|edu|gov)(?:/\S*)?\b", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.]+\b")
_LINE_MARKERS = re.compile(r"(?m)^\s*(?:#{1,6}\s*|>+\s*|[-*+•·]\s+|\d{1,3}[.)]\s+)")
_SYMBOLS = re.compile(r"[*_`#~|<>\\^{}\[\]]")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_REPEATED_PUNCT = re.compile(r"([,.;:!?])[,.;:]+")
_WORD_SYMBOLS = {"&": " and ", "%": " percent", "+": " plus ", "=": " equals ", "@": " at ", "/": " "}


def speakable(text: str) -> str:
    """Remove markdown, URLs, emojis and symbols that a voice cannot say; keep words, digits and punctuation."""
    text = _CODE_BLOCK.sub(" ", text)
    text = _MD_LINK.sub(r"\1", text)
    text = _EMAIL.sub(" email address ", text)
    text = _URL.sub(" link ", text)
    text = _LINE_MARKERS.sub(" ", text)
    text = text.replace("`", " ")
    text = _SYMBOLS.sub(" ", text)
    for sym, word in _WORD_SYMBOLS.items():
        text = text.replace(sym, word)
    text = text.replace("\u2014", ", ").replace("\u2013", ", ")
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in ("So", "Sk", "Cs", "Co", "Cn", "Mn") or ch in "\u200d\ufe0f":
            continue  # emojis, modifiers, private use, variation selectors
        kept.append(" " if cat.startswith("C") else ch)
    text = "".join(kept)
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _REPEATED_PUNCT.sub(r"\1", text)
    return _SPACES.sub(" ", text).strip()


_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "jr", "sr", "prof", "no",
                            "approx", "inc", "ltd", "co", "mt", "ft"})


class ClauseSegmenter:
    """Feed answer text as it streams; get back clauses ready to be spoken.

    A clause ends at ``. ? !`` (not after a digit or an abbreviation), at ``, ; :`` once it has ``min_words``, or
    after ``max_words`` without punctuation. The first clause uses smaller limits so the first audio comes early.
    A boundary counts only once the next character (a space or newline) or the end of the stream is seen, so
    "3.5" or "example.com" are never cut.
    """

    def __init__(self, first_min_words: int = 2, first_max_words: int = 8, min_words: int = 4,
                 max_words: int = 18) -> None:
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.min_words = min_words
        self.max_words = max_words
        self.buffer = ""
        self.emitted = 0

    def feed(self, text: str) -> list[str]:
        self.buffer += text
        out = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            clause, self.buffer = self.buffer[:cut].strip(), self.buffer[cut:].lstrip()
            if clause:
                out.append(clause)
                self.emitted += 1
        return out

    def flush(self) -> list[str]:
        clause, self.buffer = self.buffer.strip(), ""
        if clause:
            self.emitted += 1
            return [clause]
        return []

    def _find_cut(self) -> int | None:
        buf = self.buffer
        # A sentence end right at the end of the buffer: cut now, unless "." might still be part of a number,
        # an abbreviation or a file/domain name (then the next character decides).
        tail = buf.rstrip("\"')")
        if tail and tail[-1] in ".?!" and self._sentence_end(tail, len(tail) - 1):
            before = tail[:-1].split()
            if tail[-1] in "?!" or (before and before[-1].isalpha() and len(before[-1]) > 1):
                return len(buf)
        first = self.emitted == 0
        min_words = self.first_min_words if first else self.min_words
        max_words = self.first_max_words if first else self.max_words
        words = 0
        in_word = False
        for i, ch in enumerate(buf):
            if ch.isspace():
                if in_word:
                    words += 1
                in_word = False
                prev = buf[i - 1] if i else ""
                if prev in ".?!" and self._sentence_end(buf, i - 1):
                    return i
                if prev in ",;:" and words >= min_words:
                    return i
                if words >= max_words:
                    return i
                if ch == "\n" and words >= 1:
                    return i
            else:
                in_word = True
        return None

    @staticmethod
    def _sentence_end(buf: str, pos: int) -> bool:
        if buf[pos] in "?!":
            return True
        before = buf[:pos]
        token = before.split()[-1].lower() if before.split() else ""
        if not token:
            return False
        if token[-1].isdigit() and len(token) <= 2 and token.isdigit():
            return False  # "1." in an enumeration
        if token.strip("\"'(") in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
            return False
        return True
