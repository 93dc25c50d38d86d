"""A linear echo canceller for the speech model's ears: the user's voice is kept whole during double talk.

WebRTC's AEC3 (``core.audio.aec``) removes the assistant's echo very thoroughly, but its nonlinear suppressor also
takes a large part of the user's voice whenever both talk at once: in the simulated laptop room "Stop. What is two
plus two?" said over the assistant came out of it 5 dB quieter and spectrally torn, and Whisper heard "What is your
do?". That signal stays what the VAD listens to (it never mistakes the echo for the user). The speech model listens to
this canceller's output instead: the microphone minus a *linear* estimate of the echo, with nothing suppressed, so
the user's words survive double talk (the same sentence: "What is 2 plus 2?") and a little residual echo remains
(about 15 dB under the echo after a few seconds of the assistant speaking; the filter keeps what it learned across
answers).

The filter is a partitioned-block frequency-domain NLMS with overlap-save and the gradient constraint: 10 ms blocks,
``taps_s`` of echo path (output latency, room reverberation), an adaptation step normalised per frequency bin by the
smoothed reference power. It adapts only while the assistant is playing and the user is not talking: the caller says
so (``adapt``), from AEC3's output (a frame that AEC3 leaves close to the microphone's level holds near-end speech).
About 1 % of a core at 16 kHz.
"""

from __future__ import annotations

import numpy as np

from core.constants import AEC_FRAME_SAMPLES_16K, MODEL_INPUT_RATE


class LinearEchoCanceller:
    """Frequency-domain NLMS echo canceller, one 10 ms frame (160 samples at 16 kHz) per :meth:`process` call."""

    def __init__(self, taps_s: float = 0.3, step: float = 0.8, rate: int = MODEL_INPUT_RATE,
                 block: int = AEC_FRAME_SAMPLES_16K) -> None:
        self.block = block
        self.partitions = max(1, int(np.ceil(taps_s * rate / block)))
        bins = block + 1
        self.step = step
        self._w = np.zeros((self.partitions, bins), dtype=np.complex128)   # the echo path, per partition
        self._x = np.zeros((self.partitions, bins), dtype=np.complex128)   # reference spectra, newest first
        self._x_prev = np.zeros(block)
        self._power = np.full(bins, 1e-4)
        self._e_pad = np.zeros(2 * block)
        self.frames = 0
        self.adapted_frames = 0

    def reset(self) -> None:
        """Forget the echo path (a new device: another path)."""
        self._w[:] = 0
        self._x[:] = 0
        self._x_prev[:] = 0
        self._power[:] = 1e-4

    def process(self, mic: np.ndarray, ref: np.ndarray, adapt: bool, out: np.ndarray | None = None) -> np.ndarray:
        """The microphone frame minus the estimated echo of ``ref`` (the far end aligned with it); ``adapt``:
        learn from this frame (only echo in the microphone)."""
        b = self.block
        x = np.asarray(ref, dtype=np.float64)
        spectrum = np.fft.rfft(np.concatenate([self._x_prev, x]))
        self._x_prev = x
        self._x = np.roll(self._x, 1, axis=0)
        self._x[0] = spectrum
        echo = np.fft.irfft((self._w * self._x).sum(axis=0))[b:]
        err = np.asarray(mic, dtype=np.float64) - echo
        self._power = 0.9 * self._power + 0.1 * (spectrum.real ** 2 + spectrum.imag ** 2)
        self.frames += 1
        if adapt and float(np.max(np.abs(x))) > 1e-4:
            self._e_pad[b:] = err
            gradient = self.step * np.conj(self._x) * np.fft.rfft(self._e_pad) / (
                self.partitions * self._power + 1e-6)
            g = np.fft.irfft(gradient, axis=1)
            g[:, b:] = 0.0                      # the gradient constraint: a causal filter of ``block`` taps per part
            self._w += np.fft.rfft(g, axis=1)
            self.adapted_frames += 1
        if out is None:
            return err.astype(np.float32)
        out[:] = err
        return out
