"""The Lite profile's turn decision: VAD silence plus a cue from the transcript.

Pure logic, no model: :class:`TurnTracker` is fed VAD probabilities and audio per listen step, tells the backend
when a transcript is due (a live partial while the user speaks, a candidate final transcript as soon as a pause
starts) and decides ``cl`` / ``ss`` / ``el`` from the silence length and that transcript:

- the user ends the turn after ``silence_ms`` of silence (default 700 ms);
- sooner (``sentence_end_ms``, 350 ms) when the transcript ends a sentence (``.``, ``?``, ``!``);
- later (``continuation_ms``, 1400 ms) when it trails off on "and", "but", "so", "um", "uh", an ellipsis...;
- the turn is ignored (``el``) when it is too short (``min_speech_ms``; a command alone, "Wait.", only
  ``command_min_speech_ms``), has no words, or holds only a backchannel or a noise annotation ("mm-hm",
  "uh-huh", "(coughs)", Whisper's silence hallucinations).

Probabilities: ``p_end`` grows with the silence towards its threshold (at most 0.45 before it, 0.95 at it); it is
split between ``ss`` and ``el`` by how ignorable the transcript is. The state is always the argmax.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np

from core.constants import MODEL_INPUT_RATE, VAD_WINDOW_SAMPLES_16K
from core.speech_acts import is_command_alone, is_nonlexical

TurnState = Literal["cl", "ss", "el"]   # the engine's turn states: keep listening, answer now, ignore

CONTINUATION_WORDS = frozenset({
    "and", "but", "so", "or", "um", "uh", "uhm", "umm", "er", "erm", "hmm", "because", "like", "then", "the", "a",
    "an", "to", "of", "with", "if", "that", "my", "your", "is", "are", "for", "in", "on", "at", "well",
})
_SENTENCE_END = re.compile(r"[.?!]['\")\]]*$")
_ANNOTATION = re.compile(r"[\[(*♪][^\])*♪]*[\])*♪]")


@dataclass
class TurnConfig:
    vad_on: float = 0.5                 # speech starts at this probability
    vad_off: float = 0.35               # ...and continues while above this one
    silence_ms: int = 700               # default end of turn
    sentence_end_ms: int = 350          # the transcript ends a sentence
    continuation_ms: int = 1400         # the transcript trails off ("and", "um"...)
    candidate_after_ms: int = 100       # transcribe the utterance once a pause is this long
    partial_every_ms: int = 500         # live transcript: re-decode after this much new audio (barge-ins need it)
    min_speech_ms: int = 200            # shorter speech is ignored...
    command_min_speech_ms: int | None = 96   # ...unless it is a command alone ("Wait.", "Stop."): then this much
                                        # (over the echo the VAD credits a spoken "Wait." with 128-192 ms)
    pre_roll_ms: int = 400              # audio kept before the onset
    tail_ms: int = 200                  # silence kept after the speech end for the final decode
    asr_max_gap_ms: int = 300           # a longer pause inside the utterance is shortened to this for Whisper,
                                        # which drops what follows a long pause ("What is the capital ... of Spain?")
    max_turn_s: float = 28.0            # Whisper's window is 30 s: end the turn here
    no_speech_prob: float = 0.6         # Whisper's no-speech probability above which (and a low log-prob)...
    no_speech_logprob: float = -1.0     # ...the transcript is taken as a hallucination on non-speech,
    no_speech_max_speech_ms: int | None = 1000   # ...when the VAD heard less speech than this (None: always).
                                        # Barge-in questions over the echo measured no-speech 0.61-0.63 with
                                        # 1.1-1.4 s of speech ("What is tube plus tube?", dropped); the
                                        # hallucinations it catches came with 32-900 ms.
    sound_margin: float | None = 5.0    # speech shorter than no_speech_max_speech_ms whose words Whisper finds
                                        # less than this much likelier (nats, whole sequence) than the likeliest
                                        # reading of it as a sound ("Ahem.", "Hmm.", "(coughs)": asr.SOUND_READINGS)
                                        # is a sound. None: not asked. docs/lite.md has the measurement.

    def short_speech(self, speech_ms: float | None) -> bool:
        """Whisper's own evidence on non-speech (the no-speech and sound tests) is asked of this much speech: less
        than ``no_speech_max_speech_ms``, or an unknown length."""
        return self.no_speech_max_speech_ms is None or speech_ms is None or speech_ms < self.no_speech_max_speech_ms


@dataclass
class Transcript:
    text: str
    end_sample: int          # transcript covers turn audio [0, end_sample)
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0
    sound_margin: float | None = None   # WhisperAsr.sound_margin, when it was asked


def words(text: str) -> list[str]:
    cleaned = _ANNOTATION.sub(" ", text.lower())
    return re.findall(r"[a-z0-9']+(?:-[a-z0-9']+)*", cleaned)


# A lone letter that sounds like a one-word utterance is how Whisper tiny, with no context, spells that word: "Why?"
# in the simulated rooms came out "y" in every room (dry: "Why?"), and a lone letter is no word, so it was dropped.
LETTER_WORDS = {"y": "Why?"}


def respelled(text: str) -> str:
    """``text``, or the word a lone letter sounds like (:data:`LETTER_WORDS`): "y" and "Y?" -> "Why?"."""
    bare = text.strip().strip(".?!,…").strip().lower()
    return LETTER_WORDS.get(bare, text)


def is_ignorable(t: Transcript | None, cfg: TurnConfig, speech_ms: float | None = None) -> bool:
    """No words, only sounds (hums, hesitations, laughter, coughs, noise annotations: ``core.speech_acts``),
    Whisper's typical output on non-speech, or short words that Whisper itself finds hardly likelier than a sound
    (``sound_margin``; the last two are not asked of an utterance with ``no_speech_max_speech_ms`` of speech or
    more: the VAD's evidence outweighs them). Lexical backchannels ("yeah", "okay") are the engine's call: they can
    be the answer to a question."""
    if t is None or not words(t.text):
        return True
    short = cfg.short_speech(speech_ms)
    if short and t.no_speech_prob > cfg.no_speech_prob and t.avg_logprob < cfg.no_speech_logprob:
        return True
    if short and cfg.sound_margin is not None and t.sound_margin is not None and t.sound_margin < cfg.sound_margin:
        return True
    return is_nonlexical(t.text)


def silence_needed_ms(text: str, cfg: TurnConfig) -> int:
    """Silence that ends the turn, given the transcript so far."""
    stripped = _ANNOTATION.sub(" ", text).strip()
    if not stripped:
        return cfg.silence_ms
    if stripped.endswith(("...", "…", "-", ",")):
        return cfg.continuation_ms
    ws = words(stripped)
    if ws and ws[-1] in CONTINUATION_WORDS:
        return cfg.continuation_ms
    if _SENTENCE_END.search(stripped):
        return cfg.sentence_end_ms
    return cfg.silence_ms


@dataclass
class TurnTracker:
    """One user turn's listening state (lives in the conversation)."""

    cfg: TurnConfig
    phase: str = "idle"                 # idle | speech | pause | decided
    decision: TurnState | None = None   # ss / el once decided
    consumed: bool = False              # reply() took this turn: the next onset starts a new one
    audio: list[np.ndarray] = field(default_factory=list)  # turn audio since the onset (with pre-roll)
    n_samples: int = 0
    pre_roll: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    speech_samples: int = 0
    speech_end: int = 0                 # turn sample where the latest speech window ended
    silence_samples: int = 0            # since the latest speech window
    last_partial_at: int = 0
    partial: Transcript | None = None
    candidate: Transcript | None = None  # transcript of the whole utterance, up to speech_end (+ tail)
    in_speech: bool = False
    windows: list[tuple[int, bool]] = field(default_factory=list)  # (end sample, speech) of each VAD window

    # ------------------------------------------------------------------------------------------- feeding

    def reset(self) -> None:
        keep = self.pre_roll
        self.__init__(self.cfg)  # type: ignore[misc]
        self.pre_roll = keep

    def feed(self, chunk_16k: np.ndarray, probs: np.ndarray) -> None:
        """One listen step: the chunk's samples and the VAD probability of each window completed in it."""
        chunk = np.asarray(chunk_16k, dtype=np.float32).reshape(-1)
        cfg = self.cfg
        win = VAD_WINDOW_SAMPLES_16K
        speech_flags = []
        for p in probs:
            self.in_speech = p >= (cfg.vad_off if self.in_speech else cfg.vad_on)
            speech_flags.append(self.in_speech)
        any_speech = any(speech_flags)
        if self.phase in ("idle", "decided") and any_speech:
            if self.phase == "idle" or self.decision == "el" or self.consumed:
                self._start(chunk)
            else:  # the user went on after an answer decision nobody acted on: same turn
                self.decision = None
                self._append(np.concatenate([self.pre_roll, chunk]))
                self.pre_roll = np.zeros(0, dtype=np.float32)
            self.phase = "speech"
        elif self.phase in ("speech", "pause"):
            self._append(chunk)
        else:
            self.pre_roll = np.concatenate([self.pre_roll, chunk])[-int(cfg.pre_roll_ms * MODEL_INPUT_RATE / 1000):]
            return
        # Window positions inside this chunk, relative to the turn's audio.
        chunk_start = self.n_samples - len(chunk)
        offset = max(0, len(chunk) - len(probs) * win)
        for i, speaking in enumerate(speech_flags):
            end = chunk_start + offset + (i + 1) * win
            self.windows.append((end, speaking))
            if speaking:
                self.speech_samples += win
                self.speech_end = end
                self.silence_samples = 0
                if self.phase == "pause":
                    self.phase = "speech"
                    self.candidate = None
            else:
                self.silence_samples += win
        if self.phase == "speech" and self.silence_samples * 1000 >= cfg.candidate_after_ms * MODEL_INPUT_RATE:
            self.phase = "pause"

    def _start(self, chunk: np.ndarray) -> None:
        pre = self.pre_roll
        self.reset()
        self.pre_roll = np.zeros(0, dtype=np.float32)
        self.audio = [pre, chunk] if len(pre) else [chunk]
        self.n_samples = len(pre) + len(chunk)

    def _append(self, chunk: np.ndarray) -> None:
        self.audio.append(chunk)
        self.n_samples += len(chunk)

    # ------------------------------------------------------------------------------------------- queries

    def turn_audio(self, end_sample: int | None = None) -> np.ndarray:
        if len(self.audio) > 1:
            self.audio = [np.concatenate(self.audio)]
        audio = self.audio[0] if self.audio else np.zeros(0, dtype=np.float32)
        return audio if end_sample is None else audio[:end_sample]

    def asr_audio(self, end_sample: int | None = None) -> np.ndarray:
        """The turn's audio for the recogniser: as :meth:`turn_audio`, with every silence between two stretches of
        speech longer than ``asr_max_gap_ms`` shortened to that (half of it kept on each side)."""
        audio = self.turn_audio(end_sample)
        keep = int(self.cfg.asr_max_gap_ms * MODEL_INPUT_RATE / 1000)
        pieces, pos = [], 0
        for start, stop in self._inner_silences(len(audio)):
            if stop - start > keep:
                pieces.append(audio[pos:start + keep // 2])
                pos = stop - keep // 2
        if not pieces:
            return audio
        pieces.append(audio[pos:])
        return np.concatenate(pieces)

    def _inner_silences(self, limit: int) -> Iterator[tuple[int, int]]:
        """(start, end) sample spans without speech that have speech before and after them, up to ``limit``."""
        win = VAD_WINDOW_SAMPLES_16K
        last_speech_end = None
        silence_start = None
        for end, speaking in self.windows:
            if end > limit:
                break
            if speaking:
                if silence_start is not None:
                    yield silence_start, end - win
                silence_start, last_speech_end = None, end
            elif last_speech_end is not None and silence_start is None:
                silence_start = last_speech_end

    def candidate_end(self) -> int:
        return min(self.n_samples, self.speech_end + int(self.cfg.tail_ms * MODEL_INPUT_RATE / 1000))

    def needs_partial(self) -> bool:
        every = int(self.cfg.partial_every_ms * MODEL_INPUT_RATE / 1000)
        return self.phase == "speech" and self.n_samples - self.last_partial_at >= every

    def needs_candidate(self) -> bool:
        return self.phase == "pause" and (self.candidate is None or self.candidate.end_sample < self.speech_end)

    def too_long(self) -> bool:
        return self.phase in ("speech", "pause") and self.n_samples >= self.cfg.max_turn_s * MODEL_INPUT_RATE

    @property
    def live(self) -> Transcript | None:
        """The best transcript so far: the candidate, else the latest partial."""
        return self.candidate or self.partial

    @property
    def live_text(self) -> str | None:
        return self.live.text if self.live else None

    @property
    def live_logprob(self) -> float | None:
        """The recogniser's mean token log-probability for :attr:`live_text`."""
        return self.live.avg_logprob if self.live else None

    # ------------------------------------------------------------------------------------------- decision

    @property
    def speech_ms(self) -> float:
        """How much of the turn the VAD heard as speech."""
        return self.speech_samples * 1000 / MODEL_INPUT_RATE

    def ignorable(self) -> bool:
        need_ms = self.cfg.min_speech_ms
        if (self.cfg.command_min_speech_ms is not None and self.candidate is not None
                and is_command_alone(self.candidate.text)):
            need_ms = min(need_ms, self.cfg.command_min_speech_ms)
        return self.speech_ms < need_ms or is_ignorable(self.candidate, self.cfg, self.speech_ms)

    def decide(self, force: bool = False) -> tuple[TurnState, tuple[float, float, float]]:
        """The state after this listen step; ``force`` ends the turn now (end of input, too long)."""
        if self.phase in ("idle", "decided"):
            if force and self.phase == "idle":
                self.phase, self.decision = "decided", "el"
                return "el", (0.05, 0.0, 0.95)
            return "cl", (0.98, 0.01, 0.01)
        if self.phase == "speech" and not force:
            return "cl", (0.95, 0.04, 0.01)
        text = self.candidate.text if self.candidate else ""
        need = silence_needed_ms(text, self.cfg)
        silence_ms = self.silence_samples * 1000 / MODEL_INPUT_RATE
        p_ignore = 0.95 if self.ignorable() else 0.05
        if force or (self.candidate is not None and silence_ms >= need):
            p_end = 0.95
            state: TurnState = "el" if p_ignore > 0.5 else "ss"
            self.phase, self.decision = "decided", state
        else:
            p_end = 0.45 * min(1.0, silence_ms / need)
            state = "cl"
        probs = (1.0 - p_end, p_end * (1.0 - p_ignore), p_end * p_ignore)
        return state, tuple(round(p, 4) for p in probs)  # type: ignore[return-value]
