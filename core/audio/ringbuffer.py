"""Preallocated ring buffers that move samples between audio callbacks and the audio worker thread.

One writer and one reader. The internal lock is held only for index arithmetic and one or two ``memcpy``-sized
numpy copies, so an audio callback never waits more than a few microseconds. Nothing is allocated on the
``write``/``read_into`` paths.

Positions are absolute sample counters (``written``, ``read_pos``) that never wrap, so a reader can tell exactly
which samples of the stream it got, and timestamps recorded against those counters stay meaningful.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """A bounded FIFO of samples (1-D) with optional per-sample integer tags.

    ``write`` never blocks: samples that do not fit are dropped and counted in :attr:`overflow_samples` (the
    callback must not wait for the reader). ``read_into`` returns how many samples it copied.
    """

    def __init__(self, capacity: int, dtype: type | np.dtype = np.float32, tagged: bool = False) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = int(capacity)
        self._buf = np.zeros(self.capacity, dtype=dtype)
        self._tags = np.zeros(self.capacity, dtype=np.int64) if tagged else None
        self._lock = threading.Lock()
        self._w = 0   # total samples ever written (absolute position of the next write)
        self._r = 0   # total samples ever read or discarded
        self.overflow_samples = 0
        self.overflow_events = 0

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def written(self) -> int:
        return self._w

    @property
    def read_pos(self) -> int:
        return self._r

    def available(self) -> int:
        return self._w - self._r

    def free(self) -> int:
        return self.capacity - (self._w - self._r)

    # -- producer ---------------------------------------------------------------------------------------------
    def write(self, samples: np.ndarray, tag: int = 0) -> int:
        """Append samples; returns how many were stored (the rest were dropped and counted)."""
        n = len(samples)
        with self._lock:
            space = self.capacity - (self._w - self._r)
            k = n if n <= space else space
            if k < n:
                self.overflow_samples += n - k
                self.overflow_events += 1
            if k > 0:
                start = self._w % self.capacity
                first = min(k, self.capacity - start)
                self._buf[start:start + first] = samples[:first]
                if self._tags is not None:
                    self._tags[start:start + first] = tag
                if first < k:
                    self._buf[:k - first] = samples[first:k]
                    if self._tags is not None:
                        self._tags[:k - first] = tag
                self._w += k
            return k

    # -- consumer ---------------------------------------------------------------------------------------------
    def read_into(self, out: np.ndarray, tags_out: np.ndarray | None = None, max_samples: int | None = None) -> int:
        """Copy up to ``len(out)`` (or ``max_samples``) of the oldest samples into ``out``; returns the count."""
        limit = len(out) if max_samples is None else min(len(out), max_samples)
        with self._lock:
            k = min(limit, self._w - self._r)
            if k > 0:
                start = self._r % self.capacity
                first = min(k, self.capacity - start)
                out[:first] = self._buf[start:start + first]
                if first < k:
                    out[first:k] = self._buf[:k - first]
                if tags_out is not None and self._tags is not None:
                    tags_out[:first] = self._tags[start:start + first]
                    if first < k:
                        tags_out[first:k] = self._tags[:k - first]
                self._r += k
            return k

    def read(self, max_samples: int | None = None) -> np.ndarray:
        """Return (a new array of) up to ``max_samples`` of the oldest samples; for non-realtime readers."""
        n = self.available() if max_samples is None else min(max_samples, self.available())
        out = np.empty(n, dtype=self._buf.dtype)
        got = self.read_into(out)
        return out[:got]

    def discard(self, max_samples: int | None = None) -> int:
        """Drop up to ``max_samples`` (default: everything) queued samples; returns how many were dropped."""
        with self._lock:
            avail = self._w - self._r
            k = avail if max_samples is None else min(avail, max_samples)
            self._r += k
            return k

    def tag_counts_pending(self) -> dict[int, int]:
        """Samples still queued per tag (non-realtime helper; allocates)."""
        if self._tags is None:
            return {}
        with self._lock:
            k = self._w - self._r
            start = self._r % self.capacity
            idx = (start + np.arange(k)) % self.capacity
            tags = self._tags[idx]
        values, counts = np.unique(tags, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


class TimestampRing:
    """Fixed-size ring of (sample position, monotonic time) pairs written by a callback, read by the worker.

    The callback calls :meth:`record` once per block; the reader takes a snapshot of the most recent entries.
    """

    def __init__(self, size: int = 512) -> None:
        self._data = np.zeros((size, 2), dtype=np.float64)
        self._size = size
        self._n = 0
        self._lock = threading.Lock()

    def record(self, position: int, t: float) -> None:
        with self._lock:
            i = self._n % self._size
            self._data[i, 0] = position
            self._data[i, 1] = t
            self._n += 1

    @property
    def count(self) -> int:
        return self._n

    def recent(self, k: int | None = None) -> np.ndarray:
        """The latest ``k`` entries (oldest first) as an (m, 2) array copy."""
        with self._lock:
            m = min(self._n, self._size if k is None else min(k, self._size))
            if m == 0:
                return np.zeros((0, 2))
            end = self._n % self._size
            idx = (end - m + np.arange(m)) % self._size
            return self._data[idx].copy()

    def clear(self) -> None:
        with self._lock:
            self._n = 0
