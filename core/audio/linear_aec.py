"""A linear echo canceller for the speech model's ears: the user's voice is kept whole during double talk.

WebRTC's AEC3 (``core.audio.aec``) removes the assistant's echo very thoroughly, but its nonlinear suppressor also
takes a large part of the user's voice whenever both talk at once: in the simulated laptop room "Stop. What is two
plus two?" said over the assistant came out of it 5 dB quieter and spectrally torn, and Whisper heard "What is your
do?". That signal stays what the VAD listens to (it never mistakes the echo for the user). The speech model listens to
this canceller's output instead: the microphone minus a *linear* estimate of the echo, with nothing suppressed, so
the user's words survive double talk (the same sentence: "What is 2 plus 2?") and a little residual echo remains
(about 15 dB under the echo after a few seconds of the assistant speaking; the filter keeps what it learned across
answers).

Each filter is a partitioned-block frequency-domain adaptive filter with overlap-save and the gradient constraint
(10 ms blocks, ``taps_s`` of echo path: output latency, room reverberation), adapted as a diagonal
frequency-domain Kalman filter (:class:`_BlockKalman`; the state-space frequency-domain adaptive filter of Enzner
and Vary, "Frequency-domain adaptive Kalman filter for acoustic echo control in hands-free telephones", Signal
Processing 86(6), 2006, in our own simplified form). It learns the echo path faster and deeper than the
normalised LMS filter this module used first, and its steps shrink by themselves when the error holds more than
echo: in the simulated rooms, 9-12 dB of cancellation after the first second of an answer and 25-30 dB after five
(NLMS: 6-8 and 10-25; on espeak-ng's voice NLMS even lost ground over time). It adapts only while the assistant is
playing and the user is not talking: the caller says so (``adapt``), from AEC3's output (a frame that AEC3 leaves
close to the microphone's level holds near-end speech). Two such filters of different lengths run side by side
(:class:`LinearEchoCanceller`): the short one converges faster, which matters for a user who interrupts the first
answer of a session, the long one cancels deeper later. About 2 % of a core at 16 kHz while the assistant speaks;
nothing while it is silent.
"""

from __future__ import annotations

import numpy as np

from core.constants import AEC_FRAME_SAMPLES_16K, MODEL_INPUT_RATE

SETTLED_FRAMES = 800     # adapted frames (8 s of the assistant's speech) after which...
IDLE_EVERY = 4           # ...the filter that is not the output adapts on every 4th frame only


class _BlockKalman:
    """One partitioned-block frequency-domain adaptive filter of ``partitions`` blocks, adapted as a diagonal
    frequency-domain Kalman filter: each partition's weight in each frequency bin is a state with its own error
    variance ``P``. The gain is ``P X* / (sum |X|^2 P + psi)``, where ``psi`` (the measurement noise) is the
    smoothed error power: a large error (the start, or a user talking) takes small steps by itself, and a state
    that is still uncertain (large ``P``) takes large ones. ``P`` shrinks by what each update taught and grows
    back by ``(1 - a^2) |W|^2`` (the echo path may drift)."""

    def __init__(self, partitions: int, block: int, a: float = 0.9995, p0: float = 1.0,
                 smooth: float = 0.5) -> None:
        self.block = block
        self.partitions = partitions
        bins = block + 1
        self._p0 = p0
        self._a2 = a * a
        self._smooth = smooth
        self._w = np.zeros((partitions, bins), dtype=np.complex128)   # the echo path, per partition
        self._p = np.full((partitions, bins), p0)                      # its error variance
        self._psi = np.full(bins, 1e-6)                                # the error power (measurement noise)
        self._e_pad = np.zeros(2 * block)

    def reset(self) -> None:
        self._w[:] = 0
        self._p[:] = self._p0
        self._psi[:] = 1e-6

    def error(self, x_spectra: np.ndarray, mic: np.ndarray) -> np.ndarray:
        """The microphone frame minus this filter's echo estimate (``x_spectra``: reference spectra, newest
        first, at least ``partitions`` of them)."""
        echo = np.fft.irfft((self._w * x_spectra[:self.partitions]).sum(axis=0))[self.block:]
        return mic - echo

    def adapt(self, x_spectra: np.ndarray, x_power: np.ndarray, err: np.ndarray) -> None:
        """One update from the frame's error (``x_power``: ``|x_spectra|^2``)."""
        b, x, p = self.block, x_spectra[:self.partitions], self._p
        self._e_pad[b:] = err
        spectrum = np.fft.rfft(self._e_pad)
        self._psi *= self._smooth
        self._psi += (1.0 - self._smooth) * (spectrum.real ** 2 + spectrum.imag ** 2)
        px2 = p * x_power[:self.partitions]
        p_inv = p / (px2.sum(axis=0) + self._psi + 1e-10)       # the gain is p_inv * conj(x)
        g = np.fft.irfft(p_inv * np.conj(x) * spectrum, axis=1)
        g[:, b:] = 0.0                      # the gradient constraint: a causal filter of ``block`` taps per part
        self._w += np.fft.rfft(g, axis=1)
        # P shrinks by half of what the gain taught (the overlap-save error holds ``block`` of the ``2 block``
        # samples) and grows back by the drift allowance
        px2 *= p_inv
        p -= 0.5 * px2
        p *= self._a2
        p += (1.0 - self._a2) * (self._w.real ** 2 + self._w.imag ** 2)


class LinearEchoCanceller:
    """Frequency-domain Kalman echo canceller, one 10 ms frame (160 samples at 16 kHz) per :meth:`process` call.

    Two filters learn the same echo path: a short one (``short_taps_s``: fewer partitions, so it converges
    faster: after one second of the assistant's speech about 12 dB of cancellation in the simulated laptop room
    instead of 8 for the long one) and a long one (``taps_s``: it covers more of the room's reverberation, so it
    ends deeper in a reverberant room). The output is the error of whichever has cancelled more of the echo lately
    (its error energy over the recent frames it adapted on, which hold only echo), so a fresh session gets the fast
    filter and a settled one the deep filter, with no switching on the user's speech."""

    def __init__(self, taps_s: float = 0.3, rate: int = MODEL_INPUT_RATE, block: int = AEC_FRAME_SAMPLES_16K,
                 short_taps_s: float | None = 0.15) -> None:
        self.block = block
        self.partitions = max(1, int(np.ceil(taps_s * rate / block)))
        bins = block + 1
        self._filters = [_BlockKalman(self.partitions, block)]
        if short_taps_s is not None and short_taps_s < taps_s:
            self._filters.insert(0, _BlockKalman(max(1, int(np.ceil(short_taps_s * rate / block))), block))
        self._x = np.zeros((self.partitions, bins), dtype=np.complex128)   # reference spectra, newest first
        self._x_prev = np.zeros(block)
        self._residual = np.zeros(len(self._filters))    # smoothed error energy of each filter on echo-only frames
        self.selected = 0                                # the filter whose error is the output
        self._quiet = 0                                  # frames since the reference last held a sample
        self.frames = 0
        self.adapted_frames = 0
        self.excess = 0.0                                # the last frame's error / microphone energy (see below)

    def reset(self) -> None:
        """Forget the echo path (a new device: another path)."""
        for f in self._filters:
            f.reset()
        self._x[:] = 0
        self._x_prev[:] = 0
        self._residual[:] = 0
        self.selected = 0
        self._quiet = 0

    def process(self, mic: np.ndarray, ref: np.ndarray, adapt: bool, out: np.ndarray | None = None) -> np.ndarray:
        """The microphone frame minus the estimated echo of ``ref`` (the far end aligned with it); ``adapt``:
        learn from this frame (only echo in the microphone)."""
        x = np.asarray(ref, dtype=np.float64)
        m = np.asarray(mic, dtype=np.float64)
        self.frames += 1
        self._quiet = self._quiet + 1 if not x.any() else 0
        self.excess = 0.0
        if self._quiet > self.partitions:
            # no reference anywhere in the filter's span (the assistant has been silent): the echo estimate is 0;
            # nothing to compute while the app listens (the spectra kept span zeros but for the oldest, which the
            # next frame with a reference rolls out)
            return self._output(m, out)
        spectrum = np.fft.rfft(np.concatenate([self._x_prev, x]))
        self._x_prev = x
        self._x = np.roll(self._x, 1, axis=0)
        self._x[0] = spectrum
        errors = [f.error(self._x, m) for f in self._filters]
        x_power = None
        if adapt and float(np.max(np.abs(x))) > 1e-4:
            settled = self.adapted_frames >= SETTLED_FRAMES
            for i, (f, e) in enumerate(zip(self._filters, errors)):
                # once settled, a filter that is not the output learns on every ``IDLE_EVERY``-th frame only: it
                # stays a fallback (the path may change) at a quarter of the cost
                if settled and i != self.selected and self.adapted_frames % IDLE_EVERY:
                    continue
                self._residual[i] = 0.98 * self._residual[i] + 0.02 * float(np.dot(e, e))
                if x_power is None:
                    x_power = self._x.real ** 2 + self._x.imag ** 2
                f.adapt(self._x, x_power, e)
            self.adapted_frames += 1
            self.selected = int(np.argmin(self._residual))
        err = errors[self.selected]
        # never louder than the microphone: a filter thrown off by an echo path that moved (a device's latency
        # jumped) would add its wrong estimate to the user's voice; the microphone as it is is better then. How
        # much louder (``excess``) tells the capture chain that the path moved: a user talking over the echo
        # takes a frame a little over the microphone now and then, a moved path far over it
        err_e, mic_e = float(np.dot(err, err)), float(np.dot(m, m))
        self.excess = err_e / mic_e if mic_e > 0 else 0.0
        return self._output(m if err_e > mic_e else err, out)

    @staticmethod
    def _output(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is None:
            return result.astype(np.float32)
        out[:] = result
        return out
