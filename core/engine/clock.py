"""Session clocks: seconds since session start, from the wall clock or from a virtual clock driven by the input."""

from __future__ import annotations

import threading
import time


class WallClock:
    """Monotonic wall-clock seconds since :meth:`restart` (construction)."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def restart(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def from_monotonic(self, t: float) -> float:
        """Session seconds of a ``time.monotonic()`` timestamp (e.g. an audio chunk's capture time)."""
        return t - self._t0

    def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)


class VirtualClock:
    """A clock that only moves when told to: the file-driven fast mode advances it 160 ms per input chunk.

    Compute time is not on this clock, so a conversation comes out the same however fast the machine is.
    """

    virtual = True

    def __init__(self, start: float = 0.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._t

    def set(self, t: float) -> None:
        with self._lock:
            if t < self._t:
                raise ValueError(f"virtual clock cannot go back ({t} < {self._t})")
            self._t = float(t)

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._t += float(seconds)
            return self._t

    def sleep_until(self, t: float) -> None:
        if t > self._t:
            self.set(t)
