"""Contracts between the audio layer and the dialogue engine.

* :class:`AudioChunk`: 160 ms of cleaned 16 kHz microphone audio with what the capture chain's (one) VAD decided in
  it. The live :class:`~core.audio.audio_io.AudioIO` and the file-driven sources produce them with the same
  :class:`~core.audio.chain.CaptureChain`, so the engine sees the same thing in a test and in the app.
* :class:`AudioSink`: where assistant audio goes (the live player, or the virtual-clock sink of file mode). Its
  optional capabilities are methods with no-op defaults here; implementations inherit from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FlushReport:
    """What a barge-in flush did."""

    requested_at: float        # monotonic seconds when flush() was called
    dropped_samples: int       # queued assistant samples (at their source rate) that were never played
    played_samples: dict[int, int]  # per tag (turn id): samples of that tag actually played (source rate)


class AudioSink:
    """Where assistant audio goes. All counts are in samples at the rate the audio was enqueued with.

    The four methods without a body are required; the others are optional capabilities with harmless defaults."""

    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        """Queue float32 mono audio for playback; ``tag`` is the turn id it belongs to."""
        raise NotImplementedError

    def flush(self) -> FlushReport:
        """Barge-in: stop within 100 ms (short fade, no click), drop everything queued, report what was played."""
        raise NotImplementedError

    def played_samples(self, tag: int) -> int:
        """Samples of ``tag`` actually played so far."""
        raise NotImplementedError

    def pending_seconds(self) -> float:
        """Seconds of audio queued and not yet played."""
        raise NotImplementedError

    # --- optional capabilities ---------------------------------------------------------------------------------
    def finish(self, tag: int) -> None:
        """A turn's audio is complete: play out what is held back (a resampler's tail) and stop treating an empty
        queue as a gap in that turn."""

    def advance(self, t: float) -> None:
        """Clock-driven sinks: play everything due up to session time ``t`` (a device-driven sink ignores it)."""

    def first_play_time(self, tag: int) -> float | None:
        """Session time at which the first sample of ``tag`` was played, when the sink knows it exactly."""
        return None

    def pause(self) -> None:
        """Hold playback (a short fade, then silence) without dropping anything: the user may be barging in."""

    def resume(self) -> None:
        """Play on from where :meth:`pause` held (the user only said "mm-hm")."""


@dataclass
class VadEvent:
    kind: str      # "onset" | "offset"
    sample: int    # position in the 16 kHz stream where speech started/ended (onset: start of pre-roll excluded)
    prob: float


@dataclass
class AudioChunk:
    """160 ms of echo-cancelled 16 kHz microphone audio and what the VAD decided in it.

    Positions (``start``, ``vad_events[i].sample``) count 16 kHz samples of the producer's stream. ``t_start`` is the
    capture time of the first sample on the producer's clock (``time.monotonic()`` for AudioIO); a
    :class:`~core.engine.engine.ChunkSource` hands the engine chunks whose ``t_start`` is on the session clock."""

    samples_16k: np.ndarray                 # cleaned (echo-cancelled) float32
    start: int = 0
    t_start: float | None = None
    vad_events: list[VadEvent] = field(default_factory=list)
    vad_probs: np.ndarray | None = None     # speech probability of each 512-sample window of the chunk
    assistant_speaking: bool = False        # the assistant's audio (or its echo tail) overlapped this chunk
    speech_prob: float = 0.0                # highest VAD probability in the chunk
    raw_16k: np.ndarray | None = None       # microphone before echo cancellation
    reference_16k: np.ndarray | None = None  # far-end reference fed to the canceller for these samples
    near_16k: np.ndarray | None = None      # microphone minus a linear echo estimate (nothing suppressed): what the
                                            # speech model hears; None without echo cancellation (= samples_16k)
