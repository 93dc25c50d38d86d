"""The engine's AudioSink with every enqueued piece also written to a session as assistant output."""

from __future__ import annotations

from typing import Callable

import numpy as np

from core.audio.interfaces import AudioSink
from core.session.recorder import SessionRecorder


class TeeSink(AudioSink):
    """Wraps a sink: every call goes to the real sink; enqueued audio is also recorded (``assistant.wav``).

    ``now`` gives the session time stamped on each piece (None: the recorder's own clock). The time is taken
    before the piece is handed to the sink, and the piece is handed over before it is written to disk, so recording
    never delays playback.
    """

    def __init__(self, inner: AudioSink, recorder: SessionRecorder, now: Callable[[], float | None]) -> None:
        self._inner = inner
        self._recorder = recorder
        self._now = now

    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        t = self._now()
        self._inner.enqueue(samples, rate, tag)
        self._recorder.write_assistant(samples, rate, turn=tag, t=t)

    def flush(self):
        return self._inner.flush()

    def played_samples(self, tag: int) -> int:
        return self._inner.played_samples(tag)

    def pending_seconds(self) -> float:
        return self._inner.pending_seconds()

    def finish(self, tag: int) -> None:
        self._inner.finish(tag)

    def advance(self, t: float) -> None:
        self._inner.advance(t)

    def first_play_time(self, tag: int) -> float | None:
        return self._inner.first_play_time(tag)

    def pause(self) -> None:
        self._inner.pause()

    def resume(self) -> None:
        self._inner.resume()

    @property
    def inner(self) -> AudioSink:
        return self._inner
