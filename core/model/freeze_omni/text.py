"""Sentence segmentation of the LLM's reply for the speech decoder, and the text post-processing.

See docs/freeze-omni.md, "Speaking: sentence segments" and "Text post-processing".

The LLM produces one token (and one hidden state) per step. The segmenter collects the hidden states and decides
when the text so far forms a segment worth synthesising; the segment's hidden states become the decoder prefix and
its post-processed text is re-tokenised into the decoder input.

Two rules, as in the original drivers:

* ``"offline"`` (``bin/inference.py``): cut when the new text ends with one of 。：？！.?! or a newline.
* ``"server"`` (``bin/server.py``): the wider set that also has , ， : while the reply has produced no audio yet or
  once 20 hidden states are collected; a cut needs at least 4 hidden states; a delta containing "\\ufffd" (an
  incomplete multi-byte character) is not consumed, so the next delta contains the whole character.

Both: no cut on "." right after a digit ("1." list numbers, decimals). The original reads ``last_text[-1]``, which
raises IndexError when nothing was decoded before (docs/freeze-omni.md, D11); here an empty previous text has no digit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

NARROW_SUFFIXES = ("。", "：", "？", "！", ".", "?", "!", "\n")
WIDE_SUFFIXES = (",", "，", "。", "：", "？", "！", ".", ":", "?", "!", "\n")
REPLACEMENT_CHAR = "\ufffd"

_CJK = re.compile(r"[\u4e00-\u9fa5]")
_FINAL_OK = ("。", "？", "！", ".", "?", "!")
_FINAL_REPLACE = (",", "，", ";", "；", ":", "：", "、")


def post_process(text: str) -> str:
    """Normalise a segment's text before it is re-tokenised for the speech decoder (in this order).

    1. 、 -> ，   ( ) -> ,   （ ） -> ，
    2. delete \\n \\r \\t        3. delete * _ ` ~
    4. drop whitespace after "." or ":"
    5. list numbers: with any CJK character "12. x" -> "12：x" (CJK or ASCII letter after it), else "12. x" -> "12:x"
    6. make the text end with 。？！.?! : a final , ， ; ； : ： 、 becomes 。, anything else gets 。 appended.
    An empty text stays empty.
    """
    for old, new in (("、", "，"), ("(", ","), (")", ","), ("（", "，"), ("）", "，")):
        text = text.replace(old, new)
    text = re.sub(r"[\n\r\t]", "", text)
    text = re.sub(r"[*_`~]", "", text)
    text = re.sub(r"(\.|:)\s+", r"\1", text)
    if _CJK.search(text):
        text = re.sub(r"(\d+)\.\s*([\u4e00-\u9fa5A-Za-z])", r"\1：\2", text)
    else:
        text = re.sub(r"(\d+)\.\s*(\w)", r"\1:\2", text)
    if text and text[-1] not in _FINAL_OK:
        text = text[:-1] + "。" if text[-1] in _FINAL_REPLACE else text + "。"
    return text


@dataclass
class TextSegment:
    """A piece of the reply to synthesise: raw text (not post-processed) and the LLM hidden states of its tokens."""

    text: str
    hidden: list[Any]


@dataclass
class SegmenterState:
    hidden: list[Any] = field(default_factory=list)  # hidden states since the last cut
    text: str = ""                                    # text since the last cut
    last_text: str = ""                               # cumulative reply text already consumed
    audio_pieces: int = 0                             # audio pieces produced in this reply (server rule)


class SentenceSegmenter:
    """Decides where the reply is cut into speech-decoder segments.

    Feed it every LLM step of a reply with :meth:`push`: the hidden state that predicted the new token and the
    cumulative decoded text of the reply so far (or ``None`` for the first, 'ss', step: the original checks no text
    then, and its text enters with the next step's delta). :meth:`push` returns a :class:`TextSegment` when a cut
    happens; :meth:`flush` returns the remainder at the end of the reply. Server rule only: call
    :meth:`note_audio` whenever the reply yields an audio piece (this selects the narrower punctuation set).
    """

    def __init__(self, rule: Literal["offline", "server"] = "offline", min_states: int = 4,
                 wide_after_states: int = 20) -> None:
        if rule not in ("offline", "server"):
            raise ValueError(f"unknown segmentation rule {rule!r}")
        self.rule = rule
        self.min_states = min_states if rule == "server" else 0
        self.wide_after_states = wide_after_states
        self.state = SegmenterState()

    def reset(self) -> None:
        """Start a new reply."""
        self.state = SegmenterState()

    def note_audio(self, pieces: int = 1) -> None:
        self.state.audio_pieces += pieces

    def push(self, hidden: Any, text: str | None) -> TextSegment | None:
        state = self.state
        state.hidden.append(hidden)
        if text is None:
            return None
        delta = text[len(state.last_text):]
        if self.rule == "server" and REPLACEMENT_CHAR in delta:
            return None  # incomplete character: keep last_text, the next delta will contain all of it
        state.text += delta
        segment = None
        if delta.endswith(self._suffixes()) and len(state.hidden) >= self.min_states:
            after_digit = delta.endswith(".") and state.last_text[-1:].isdigit()
            if not after_digit:
                segment = TextSegment(state.text, state.hidden)
                state.text = ""
                state.hidden = []
        state.last_text = text
        return segment

    def flush(self) -> TextSegment | None:
        """The rest of the reply (None when no hidden state is pending)."""
        state = self.state
        if not state.hidden:
            return None
        segment = TextSegment(state.text, state.hidden)
        state.text = ""
        state.hidden = []
        return segment

    def _suffixes(self) -> tuple[str, ...]:
        if self.rule == "offline":
            return NARROW_SUFFIXES
        if self.state.audio_pieces == 0 or len(self.state.hidden) >= self.wide_after_states:
            return WIDE_SUFFIXES
        return NARROW_SUFFIXES
