"""What a private PulseAudio null sink played: its monitor recorded with parec (16 kHz mono), and the sound in it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np


class Monitor:
    """Records a sink's monitor (what its speakers would play) with parec, 16 kHz mono; ``mark()`` is the number of
    samples recorded so far, so a later segment can be cut from the moment something was played."""

    RATE = 16_000

    def __init__(self, source: str, path: Path) -> None:
        self.path = path
        self._out = open(path, "wb")
        self.proc = subprocess.Popen(["parec", f"--device={source}", "--format=s16le", f"--rate={self.RATE}",
                                      "--channels=1", "--raw", "--latency-msec=20"],
                                     stdout=self._out, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.mark() == 0:      # parec is up and the monitor flows
            assert self.proc.poll() is None and time.monotonic() < deadline, "parec did not start recording"
            time.sleep(0.01)

    def mark(self) -> int:
        return self.path.stat().st_size // 2

    def audio(self, start: int = 0, end: int | None = None) -> np.ndarray:
        data = np.frombuffer(self.path.read_bytes(), dtype=np.int16)[start:end]
        return data.astype(np.float32) / 32768.0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._out.close()


def sound(segment: np.ndarray, floor: float = 0.02) -> tuple[float, float, float, float, float] | None:
    """(onset s, duration s, level at the onset, level at the end, peak) of what is above ``floor``; None: silent.

    The levels are medians of the first and last 10 ms of *sound* (samples above ``floor``), not of the first and
    last 10 ms of time: an underrun on a loaded machine puts a gap of silence into what the sink played, and a gap
    right after the onset must not read as a level of zero."""
    loud = np.flatnonzero(np.abs(segment) > floor)
    if len(loud) == 0:
        return None
    a, b = int(loud[0]), int(loud[-1])
    n = Monitor.RATE // 100      # 10 ms
    return (a / Monitor.RATE, (b - a) / Monitor.RATE, float(np.median(segment[loud[:n]])),
            float(np.median(segment[loud[-n:]])), float(np.abs(segment).max()))
