"""Sample-rate conversion with soxr: a streaming resampler for live audio and a one-shot helper for files.

soxr's streaming output is delay-compensated: output sample ``k`` corresponds to input time ``k / out_rate``; it
only holds some samples back until more input (or ``last=True``) arrives. Sample counters on both sides therefore
map exactly onto each other, which the echo-canceller alignment relies on.
"""

from __future__ import annotations

import numpy as np
import soxr

DEFAULT_QUALITY = "HQ"


class StreamResampler:
    """Mono float32 streaming resampler; a pass-through when the rates are equal."""

    def __init__(self, in_rate: float, out_rate: float, quality: str = DEFAULT_QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"bad sample rates {in_rate} -> {out_rate}")
        self.in_rate = float(in_rate)
        self.out_rate = float(out_rate)
        self.quality = quality
        self._passthrough = self.in_rate == self.out_rate
        self._stream: soxr.ResampleStream | None = None
        self.samples_in = 0
        self.samples_out = 0
        self.reset()

    def reset(self) -> None:
        """Forget any held-back samples and start a new continuous stream."""
        self._stream = None if self._passthrough else soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=self.quality)
        self.samples_in = 0
        self.samples_out = 0

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Feed the next piece of the stream; returns whatever output is ready (possibly empty)."""
        x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        self.samples_in += len(x)
        if self._passthrough:
            y = x.copy()
        else:
            assert self._stream is not None
            y = self._stream.resample_chunk(x, last=last)
        self.samples_out += len(y)
        return y

    def flush(self) -> np.ndarray:
        """End of the continuous stream: return the held-back tail and reset for a new stream."""
        tail = self.process(np.zeros(0, dtype=np.float32), last=True)
        self.reset()
        return tail

    def expected_output(self, n_in: int | None = None) -> int:
        """How many output samples ``n_in`` input samples (default: all fed so far) map to in total."""
        n = self.samples_in if n_in is None else n_in
        return int(round(n * self.out_rate / self.in_rate))


def resample(samples: np.ndarray, in_rate: float, out_rate: float, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """One-shot mono resampling of a whole signal (float32 out)."""
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if in_rate == out_rate:
        return x.copy()
    return soxr.resample(x, in_rate, out_rate, quality=quality).astype(np.float32, copy=False)
