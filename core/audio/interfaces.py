"""Contracts between the audio layer and the dialogue engine.

The real implementations (sounddevice streams, AEC, silero-vad) live in ``core.audio``; the engine's file-driven
mode provides a virtual-clock sink with the same contract, so turns and "what was heard" come out the same as in
real time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class FlushReport:
    """What a barge-in flush did."""

    requested_at: float        # monotonic seconds when flush() was called
    dropped_samples: int       # queued assistant samples (at their source rate) that were never played
    played_samples: dict[int, int]  # per tag (turn id): samples of that tag actually played (source rate)


class AudioSink(Protocol):
    """Where assistant audio goes. All counts are in samples at the rate the audio was enqueued with."""

    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        """Queue float32 mono audio for playback; ``tag`` is the turn id it belongs to."""

    def flush(self) -> FlushReport:
        """Barge-in: stop within 100 ms (short fade, no click), drop everything queued, report what was played."""

    def played_samples(self, tag: int) -> int:
        """Samples of ``tag`` actually played so far."""

    def pending_seconds(self) -> float:
        """Seconds of audio queued and not yet played."""

    # Optional: ``finish(tag)``, called when a turn's audio is complete (the engine calls it when the sink has it):
    # the sink plays out what it holds back, and stops treating an empty queue as a gap in that turn.


@dataclass
class VadEvent:
    kind: str      # "onset" | "offset"
    sample: int    # position in the 16 kHz stream where speech started/ended (onset: start of pre-roll excluded)
    prob: float


class StreamingVad(Protocol):
    """Echo-aware streaming VAD on the echo-cancelled 16 kHz signal (512-sample windows)."""

    def process(self, samples_16k: np.ndarray, assistant_speaking: bool,
                reference_16k: np.ndarray | None = None) -> list[VadEvent]:
        """Feed any number of samples; returns onsets/offsets detected in them."""

    @property
    def probability(self) -> float:
        """Speech probability of the latest window."""

    def pre_roll(self) -> np.ndarray:
        """The buffered audio before the latest onset (default 500 ms), so the first syllable is never lost."""

    def reset(self) -> None: ...
