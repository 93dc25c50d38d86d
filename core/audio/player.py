"""Assistant playback: the :class:`~core.audio.interfaces.AudioSink` that the engine writes to.

Audio arrives at the model's rate (24 kHz Freeze-Omni, 22.05 kHz Piper...) and is resampled once, on ``enqueue``, to
the output device rate by a streaming soxr resampler per turn (tag), then queued in a preallocated ring buffer.
The output stream's callback calls :meth:`Player.fill`, which only copies samples out of the ring, applies a short
fade when a flush was requested, and counts which tag's samples went out.

"Played" means handed to the output device by the callback: from then on the sound can no longer be recalled (it is
in the device buffer and will be heard within the output latency).

Rules the engine can rely on:

* A new tag finishes the previous one (its resampler tail is queued first). :meth:`finish` ends a turn's audio
  explicitly so its last few milliseconds are not held back by the resampler.
* :meth:`flush` (barge-in) fades out over ``fade_ms`` within one callback period, drops everything queued, and
  *cancels* every tag seen so far: audio enqueued later for a cancelled tag is dropped (and counted), so a speak
  step racing the barge-in cannot restart the interrupted turn.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from core.audio.interfaces import AudioSink, FlushReport
from core.audio.resample import StreamResampler
from core.audio.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

_MAX_BLOCK = 16384     # largest callback block handled in one piece (bigger ones are split)
_KEEP_TAGS = 64        # per-tag bookkeeping kept for this many most recent tags


@dataclass
class _Segment:
    rate: int
    src: int = 0          # source samples enqueued
    dev_start: int = 0    # tag-relative device sample where this segment starts
    dev: int = 0          # device samples written
    closed: bool = False  # resampler tail flushed: ``dev`` is final


@dataclass
class _Tag:
    tag: int
    segments: list[_Segment] = field(default_factory=list)
    resampler: StreamResampler | None = None
    played_dev: int = 0
    finished: bool = False
    cancelled: bool = False
    dropped_src: int = 0   # enqueued after cancellation, or lost to a full queue

    @property
    def dev_total(self) -> int:
        return sum(s.dev for s in self.segments)

    @property
    def src_total(self) -> int:
        return sum(s.src for s in self.segments)


class Player(AudioSink):
    """Queue of assistant audio for one output device rate. Thread-safe for one engine thread plus the callback."""

    def __init__(self, device_rate: int, capacity_seconds: float = 120.0, fade_ms: float = 8.0,
                 flush_timeout: float = 0.25) -> None:
        self._capacity_seconds, self._fade_ms = float(capacity_seconds), float(fade_ms)
        self._tag_buf = np.zeros(_MAX_BLOCK, dtype=np.int64)
        self._at_rate(int(device_rate))
        self.flush_timeout = flush_timeout
        self._tags: dict[int, _Tag] = {}
        self._current: int | None = None
        self._api_lock = threading.RLock()     # enqueue / finish / flush (non-realtime threads)
        self._count_lock = threading.Lock()    # played counters shared with the callback
        self._flush_requested = False
        self._flush_done = threading.Event()
        self._paused = False
        self._pause_faded = True         # the fade-out into a pause has been played
        self._fade_in = 0                # samples of fade-in still to apply after a resume
        self._last_fill = 0.0
        self.fills = 0
        self.consumed = 0                # device samples handed out (audio and silence)
        self.starved_blocks = 0          # callback found the queue empty while a turn was still unfinished
        self.overflow_samples = 0        # device samples that did not fit the queue
        self.dropped_after_cancel = 0    # source samples enqueued for cancelled tags

    def _at_rate(self, device_rate: int) -> None:
        self.device_rate = device_rate
        self._ring = RingBuffer(int(self._capacity_seconds * device_rate), tagged=True)
        n_fade = max(1, int(round(self._fade_ms / 1000 * device_rate)))
        # raised cosine from 1 to 0: no click, ~fade_ms long
        self._fade = (0.5 * (1.0 + np.cos(np.pi * (np.arange(n_fade) + 1) / n_fade))).astype(np.float32)
        self.fade_samples = n_fade

    def set_device_rate(self, device_rate: int) -> None:
        """The output device came back at another rate: drop everything queued (as :meth:`reset`) and play at the
        new rate from now on. The object stays the same, so the engine (and a recording tap) that hold it as their
        sink play on. Call it while no output stream runs."""
        with self._api_lock:
            self.reset()
            self._at_rate(int(device_rate))

    # -- AudioSink ------------------------------------------------------------------------------------------------
    def enqueue(self, samples: np.ndarray, rate: int, tag: int) -> None:
        """Queue float32 mono audio at ``rate`` for turn ``tag``."""
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        rate = int(rate)
        with self._api_lock:
            st = self._tags.get(tag)
            if st is None:
                st = self._new_tag(tag)
            if st.cancelled:
                st.dropped_src += len(x)
                self.dropped_after_cancel += len(x)
                log.debug("dropped %d samples for cancelled tag %d", len(x), tag)
                return
            if self._current is not None and self._current != tag:
                self._finish_locked(self._current)
                self._current = None
            seg = st.segments[-1] if st.segments else None
            if seg is None or seg.closed or seg.rate != rate:
                if seg is not None and not seg.closed:
                    self._close_segment(st)
                seg = _Segment(rate=rate, dev_start=st.dev_total)
                st.segments.append(seg)
                st.resampler = StreamResampler(rate, self.device_rate)
            st.finished = False
            # resample in pieces: one long soxr call would hold the GIL long enough to starve the output callback
            step = max(1, rate // 4)
            for i in range(0, len(x), step):
                piece = x[i:i + step]
                y = st.resampler.process(piece)
                seg.src += len(piece)
                self._write(st, seg, y)
                self._current = tag   # from now on an empty queue means the turn is starving

    def finish(self, tag: int) -> None:
        """The turn's audio is complete: queue the resampler's held-back tail."""
        with self._api_lock:
            self._finish_locked(tag)
            if self._current == tag:
                self._current = None

    def flush(self) -> FlushReport:
        """Barge-in: fade out within one callback period, drop all queued audio, cancel the tags seen so far.

        The report covers the tags this flush cancelled: samples of each that were played, and the total that was
        enqueued but never played (source rate)."""
        requested_at = time.monotonic()
        with self._api_lock:
            affected = [t for t, st in self._tags.items() if not st.cancelled]
            for st in self._tags.values():
                st.cancelled = True
                st.finished = True
                if st.resampler is not None:
                    st.resampler.reset()
                for seg in st.segments:
                    seg.closed = True
            self._current = None
            live = (time.monotonic() - self._last_fill) < 0.5
            acknowledged = False
            if live and self._ring.available() > 0:
                self._flush_done.clear()
                self._flush_requested = True
                acknowledged = self._flush_done.wait(self.flush_timeout)
            if not acknowledged:
                self._flush_requested = False
                self._ring.discard()
            with self._count_lock:
                played = {t: self._played_src(self._tags[t]) for t in affected if t in self._tags}
                dropped = sum(max(0, self._tags[t].src_total - n) for t, n in played.items())
        return FlushReport(requested_at=requested_at, dropped_samples=dropped, played_samples=played)

    def played_samples(self, tag: int) -> int:
        """Source-rate samples of ``tag`` handed to the device so far."""
        with self._count_lock:
            st = self._tags.get(tag)
            return self._played_src(st) if st is not None else 0

    def pending_seconds(self) -> float:
        return self._ring.available() / self.device_rate

    # -- extras -----------------------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether audio is queued."""
        return self._ring.available() > 0

    def enqueued_samples(self, tag: int) -> int:
        with self._api_lock:
            st = self._tags.get(tag)
            return st.src_total if st is not None else 0

    def reset(self) -> None:
        """Drop everything, including the tag bookkeeping (used when the output device changes)."""
        with self._api_lock:
            self._ring.discard()
            with self._count_lock:
                self._tags.clear()
            self._current = None

    def pause(self) -> None:
        """Hold playback: a short fade-out, then silence; nothing queued is dropped."""
        if not self._paused:
            self._pause_faded = False
            self._paused = True

    def resume(self) -> None:
        """Play on from where the pause held, with a short fade-in."""
        if self._paused:
            self._paused = False
            self._fade_in = self.fade_samples

    @property
    def paused(self) -> bool:
        return self._paused

    # -- output callback side ---------------------------------------------------------------------------------------
    def fill(self, out: np.ndarray) -> None:
        """Write the next ``len(out)`` device samples into ``out`` (1-D float32). Called from the audio callback."""
        n = len(out)
        pos = 0
        while pos < n:
            k = min(n - pos, _MAX_BLOCK)
            self._fill_part(out[pos:pos + k])
            pos += k
        self._last_fill = time.monotonic()
        self.fills += 1
        self.consumed += n

    def _fill_part(self, out: np.ndarray) -> None:
        n = len(out)
        tags = self._tag_buf
        if self._flush_requested:
            k = self._ring.read_into(out, tags, max_samples=min(n, self.fade_samples))
            out[:k] *= self._fade[:k]
            self._ring.discard()
            self._flush_requested = False
            self._flush_done.set()
            self._paused = False
        elif self._paused:
            k = 0
            if not self._pause_faded:    # fade out into the pause (what fades is played)
                k = self._ring.read_into(out, tags, max_samples=min(n, self.fade_samples))
                out[:k] *= self._fade[:k]
                self._pause_faded = True
        else:
            k = self._ring.read_into(out, tags)
            if self._fade_in and k:
                m = min(k, self._fade_in)
                start = self.fade_samples - self._fade_in
                out[:m] *= self._fade[::-1][start:start + m]
                self._fade_in -= m
            if k < n and self._current is not None:
                self.starved_blocks += 1
        if k < n:
            out[k:] = 0.0
        if k > 0:
            self._count_played(tags, k)

    def _count_played(self, tags: np.ndarray, k: int) -> None:
        first = int(tags[0])
        with self._count_lock:
            if first == int(tags[k - 1]):
                st = self._tags.get(first)
                if st is not None:
                    st.played_dev += k
                return
            cuts = np.flatnonzero(tags[1:k] != tags[:k - 1]) + 1   # rare: a block spans two turns
            start = 0
            for end in list(cuts) + [k]:
                st = self._tags.get(int(tags[start]))
                if st is not None:
                    st.played_dev += int(end - start)
                start = int(end)

    # -- internals --------------------------------------------------------------------------------------------------
    def _new_tag(self, tag: int) -> _Tag:
        st = _Tag(tag)
        with self._count_lock:
            self._tags[tag] = st
            if len(self._tags) > _KEEP_TAGS:
                for old in list(self._tags)[:len(self._tags) - _KEEP_TAGS]:
                    if old != tag and old != self._current:
                        del self._tags[old]
        return st

    def _write(self, st: _Tag, seg: _Segment, y: np.ndarray) -> None:
        if len(y) == 0:
            return
        stored = self._ring.write(y, tag=st.tag)
        seg.dev += stored
        if stored < len(y):
            lost = len(y) - stored
            self.overflow_samples += lost
            log.warning("playback queue full: dropped %.2f s of tag %d", lost / self.device_rate, st.tag)

    def _close_segment(self, st: _Tag) -> None:
        seg = st.segments[-1]
        if st.resampler is not None and not seg.closed:
            self._write(st, seg, st.resampler.flush())
        seg.closed = True

    def _finish_locked(self, tag: int) -> None:
        st = self._tags.get(tag)
        if st is None or st.cancelled or not st.segments:
            return
        self._close_segment(st)
        st.finished = True

    def _played_src(self, st: _Tag) -> int:
        """Map the tag's played device samples back to source samples, segment by segment."""
        total = 0
        for seg in st.segments:
            in_seg = min(max(st.played_dev - seg.dev_start, 0), seg.dev)
            if seg.closed and in_seg >= seg.dev:
                total += seg.src
            else:
                total += min(seg.src, int(in_seg * seg.rate / self.device_rate + 1e-9))
        return total
