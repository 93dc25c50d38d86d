"""A virtual-clock :class:`~core.audio.interfaces.AudioSink` for the file-driven modes (no audio device).

It "plays" the queued assistant audio at its real rate on a clock (virtual in fast mode, the wall clock in
``--realtime``): :meth:`VirtualAudioSink.advance` moves playback up to a time, so what was heard when an interruption
flushed the queue comes out as in real time. Everything played (and the silence between) goes to an optional writer,
which puts the assistant's audio on the input's timeline (the output WAV of ``parley chat``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

import numpy as np

from core.audio.interfaces import AudioSink, FlushReport
from core.engine.events import Clock

log = logging.getLogger(__name__)

FADE_S = 0.010      # flush fade-out, so the cut makes no click
_MAX_TAGS = 256     # per-tag play counters kept (older tags are forgotten: memory stays flat)


class _Item:
    __slots__ = ("tag", "audio", "pos", "src_rate", "counted")

    def __init__(self, tag: int | None, audio: np.ndarray, src_rate: int, counted: bool = True) -> None:
        self.tag = tag
        self.audio = audio          # at the sink's rate
        self.pos = 0
        self.src_rate = src_rate
        self.counted = counted      # False for the flush fade tail


class VirtualAudioSink(AudioSink):
    """AudioSink whose playback position is driven by a clock. Thread-safe; all methods are quick.

    ``rate``: the sink's (output) rate. Audio enqueued at another rate is resampled (soxr); per-tag counts are
    reported at the rate the audio was enqueued with, as the contract says.
    ``writer``: called with consecutive float32 blocks at ``rate`` covering the whole timeline from t = 0.
    """

    def __init__(self, clock: Clock, rate: int, writer: Callable[[np.ndarray], None] | None = None) -> None:
        self.clock = clock
        self.rate = int(rate)
        self.writer = writer
        self._taps: list[Callable[[np.ndarray], None]] = []
        self._lock = threading.RLock()
        self._queue: collections.deque[_Item] = collections.deque()
        self._pos = 0                               # samples of the timeline produced so far (sink rate)
        self._played: collections.OrderedDict[int, int] = collections.OrderedDict()   # tag -> samples (sink rate)
        self._src_rate: dict[int, int] = {}
        self._first_play: dict[int, float] = {}
        self._last_audible = -1.0
        self._paused = False
        self.flushes = 0

    # --- clock-driven playback ------------------------------------------------------------------------------------
    def advance(self, t: float | None = None) -> None:
        """Play everything due up to time ``t`` (default: the clock's now)."""
        if t is None:
            t = self.clock.now()
        with self._lock:
            target = int(round(t * self.rate))
            while self._pos < target:
                need = target - self._pos
                if not self._queue or self._paused:
                    self._emit(np.zeros(need, np.float32))
                    self._pos += need
                    break
                item = self._queue[0]
                take = min(need, len(item.audio) - item.pos)
                block = item.audio[item.pos:item.pos + take]
                if item.counted and item.tag is not None:
                    if item.tag not in self._first_play:
                        self._first_play[item.tag] = self._pos / self.rate
                    self._played[item.tag] = self._played.get(item.tag, 0) + take
                self._emit(block)
                item.pos += take
                self._pos += take
                self._last_audible = self._pos / self.rate
                if item.pos >= len(item.audio):
                    self._queue.popleft()

    def add_tap(self, tap: Callable[[np.ndarray], None]) -> None:
        """Also give every played block (the whole timeline, silence included) to ``tap``."""
        self._taps.append(tap)

    def _emit(self, block: np.ndarray) -> None:
        if not len(block):
            return
        if self.writer is not None:
            self.writer(block)
        for tap in self._taps:
            tap(block)

    # --- AudioSink ------------------------------------------------------------------------------------------------
    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        audio = np.asarray(samples, dtype=np.float32).reshape(-1)
        if rate != self.rate:
            import soxr

            audio = soxr.resample(audio, rate, self.rate).astype(np.float32)
        with self._lock:
            self.advance()   # idle time up to now is silence: this piece starts now at the earliest
            self._src_rate[tag] = int(rate)
            if tag not in self._played:
                self._played[tag] = 0
                while len(self._played) > _MAX_TAGS:
                    old, _ = self._played.popitem(last=False)
                    self._src_rate.pop(old, None)
                    self._first_play.pop(old, None)
            if len(audio):
                self._queue.append(_Item(tag, audio, int(rate)))

    def pause(self) -> None:
        with self._lock:
            self.advance()
            self._paused = True

    def resume(self) -> None:
        with self._lock:
            self.advance()
            self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def flush(self) -> FlushReport:
        requested = time.monotonic()
        with self._lock:
            self.advance()
            self._paused = False
            dropped = 0
            fade_left = int(FADE_S * self.rate)
            fade_parts = []
            for item in self._queue:
                rest = item.audio[item.pos:]
                dropped += self._to_src(item, len(rest))
                if fade_left > 0 and item.counted:
                    part = rest[:fade_left]
                    fade_parts.append(part)
                    fade_left -= len(part)
            self._queue.clear()
            if fade_parts:
                fade = np.concatenate(fade_parts)
                fade = fade * np.linspace(1.0, 0.0, len(fade), dtype=np.float32)
                self._queue.append(_Item(None, fade.astype(np.float32), self.rate, counted=False))
            self.flushes += 1
            played = {tag: self.played_samples(tag) for tag in self._played}
        return FlushReport(requested_at=requested, dropped_samples=dropped, played_samples=played)

    def _to_src(self, item: _Item, n: int) -> int:
        return int(round(n * item.src_rate / self.rate))

    def played_samples(self, tag: int) -> int:
        with self._lock:
            n = self._played.get(tag, 0)
            src = self._src_rate.get(tag, self.rate)
            return n if src == self.rate else int(round(n * src / self.rate))

    def pending_seconds(self) -> float:
        with self._lock:
            return sum(len(i.audio) - i.pos for i in self._queue) / self.rate

    # --- optional AudioSink capabilities ---------------------------------------------------------------------------
    def first_play_time(self, tag: int) -> float | None:
        """Session time at which the first sample of ``tag`` was played (None: not yet)."""
        with self._lock:
            return self._first_play.get(tag)

    def last_audible_time(self) -> float:
        with self._lock:
            return self._last_audible

    @property
    def position_seconds(self) -> float:
        with self._lock:
            return self._pos / self.rate


class NullSink(AudioSink):
    """A sink with no output (before an audio device is open): nothing plays, nothing is pending."""

    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        pass

    def flush(self) -> FlushReport:
        return FlushReport(requested_at=time.monotonic(), dropped_samples=0, played_samples={})

    def played_samples(self, tag: int) -> int:
        return 0

    def pending_seconds(self) -> float:
        return 0.0
