"""What part of an answer the user actually heard: text <-> audio alignment of the reply's speech segments.

A reply arrives as :class:`~core.engine.backend.ReplyPiece` s. By contract, a segment's text is all text emitted
after the previous ``segment_end`` piece up to and including the piece that carries ``segment_end=True``; its audio
is the audio of the same pieces. Within a segment the audio is assumed to advance uniformly over the characters
(no word timings come from the backends), and the heard part is cut back to the last whole word, so the heard text
never claims a word the user did not hear completely.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.engine.backend import ReplyPiece


@dataclass
class SpeechSegment:
    text: str = ""
    start: int = 0      # first sample of the segment in the reply's audio stream (source rate)
    end: int = 0        # one past its last sample so far
    closed: bool = False

    @property
    def samples(self) -> int:
        return self.end - self.start


class ReplyTranscript:
    """Accumulates one reply's text and audio per segment; answers "what was heard after N played samples".

    ``rate`` is the audio's sample rate; it is only used to guess how long a segment whose audio is still arriving
    will be (from the speaking rate of the finished segments, else ``default_chars_per_s``).
    """

    def __init__(self, rate: int, default_chars_per_s: float = 14.0) -> None:
        self.rate = int(rate)
        self.default_chars_per_s = default_chars_per_s
        self.segments: list[SpeechSegment] = [SpeechSegment()]
        self.text = ""          # all generated text
        self.samples = 0        # all audio samples handed to playback

    def add(self, piece: ReplyPiece) -> None:
        seg = self.segments[-1]
        if piece.text:
            seg.text += piece.text
            self.text += piece.text
        if piece.audio is not None and len(piece.audio):
            seg.end += len(piece.audio)
            self.samples += len(piece.audio)
        if piece.segment_end:
            seg.closed = True
            self.segments.append(SpeechSegment(start=self.samples, end=self.samples))

    def _samples_per_char(self) -> float:
        chars = sum(len(s.text.strip()) for s in self.segments if s.closed and s.samples)
        samples = sum(s.samples for s in self.segments if s.closed and s.samples)
        if chars and samples:
            return samples / chars
        return self.rate / self.default_chars_per_s

    def heard_text(self, played_samples: int) -> str:
        """The prefix of :attr:`text` whose speech was played completely (cut back to a word boundary)."""
        heard = []
        for seg in self.segments:
            if seg.samples == 0:
                # No audio of its own: "said" once everything before it was played, if the segment is complete.
                if seg.closed and played_samples >= seg.start:
                    heard.append(seg.text)
                    continue
                break
            if seg.closed:
                if played_samples >= seg.end:
                    heard.append(seg.text)
                    continue
                total = seg.samples
            else:
                # Audio still arriving: guess the segment's final length from its text.
                total = max(seg.samples, len(seg.text.strip()) * self._samples_per_char())
            if played_samples > seg.start:
                fraction = min(1.0, (played_samples - seg.start) / total)
                heard.append(_cut_at_word(seg.text, int(fraction * len(seg.text))))
            break
        return "".join(heard)

    def spoken_text(self) -> str:
        """Text of the complete segments that have audio (what the user hears if nothing is flushed)."""
        return self.heard_text(self.samples)

    def unheard_text(self, played_samples: int) -> str:
        return self.text[len(self.heard_text(played_samples)):]


_BOUNDARY = set(".,;:!?)]}\"\u3002\uff0c\uff1f\uff01\u2026")


def _cut_at_word(text: str, n: int) -> str:
    """``text[:n]`` cut back so that it ends after a complete word (or is empty)."""
    if n >= len(text):
        return text
    if n <= 0:
        return ""
    if text[n].isspace() or text[n] in _BOUNDARY:
        return text[:n]          # n sits on a space or punctuation: the word before it is complete
    cut = n
    while cut > 0 and not text[cut - 1].isspace():
        cut -= 1
    return text[:cut]


def finish_transcript(transcript: ReplyTranscript) -> None:
    """Generation ended: a last segment without ``segment_end`` is complete as it is."""
    seg = transcript.segments[-1]
    if (seg.text or seg.samples) and not seg.closed:
        seg.closed = True
        transcript.segments.append(SpeechSegment(start=transcript.samples, end=transcript.samples))
