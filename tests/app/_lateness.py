"""Event-loop responsiveness: a 10 ms QTimer on the GUI thread, and how late each of its ticks came."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer


class LatenessProbe:
    INTERVAL_MS = 10

    def __init__(self) -> None:
        self.lateness_ms: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness_ms.append((now - self._last) * 1000 - self.INTERVAL_MS)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def worst(self) -> float:
        """The latest tick, the first one excluded (it measures the start, not the loop)."""
        return max(self.lateness_ms[1:])

    def summary(self) -> str:
        ordered = sorted(self.lateness_ms)
        return (f"max {self.worst():.1f} ms, p99 {ordered[int(len(ordered) * 0.99)]:.1f} ms, "
                f"{len(self.lateness_ms)} ticks")
