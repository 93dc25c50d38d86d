"""The capture chain: echo cancellation -> echo-aware VAD -> meter levels -> 160 ms chunks.

It runs on microphone and far-end reference signals that are already aligned and at 16 kHz, 10 ms frames at a time.
:class:`~core.audio.audio_io.AudioIO` feeds it from the sound card (after resampling and timestamp alignment); the
file-driven mode feeds it from a WAV file mixed with a simulated room's echo of what the assistant played
(``core.engine.filemode``). Both get the same :class:`~core.audio.interfaces.AudioChunk` s, decided by the same
single VAD: a conversation tested in a file is the conversation a user has.

The assistant counts as speaking while the reference is not silent, plus ``echo_tail_ms``; the VAD then applies its
barge-in thresholds and its residual-echo check. Input gating (mute, push-to-talk released) silences the cleaned
signal before the VAD, so gated speech neither opens a turn nor reaches the model, and the timeline stays continuous.

Two cleaned signals leave the chain. AEC3's output (``samples_16k``) is what the VAD decides on: it never takes the
assistant's echo for the user. While echo cancellation is on, a linear echo canceller (``core.audio.linear_aec``)
also gives ``near_16k``: the microphone minus a linear echo estimate, nothing suppressed, so a user who talks over
the assistant is heard whole by the speech model (AEC3's suppressor tears the near-end voice apart in double talk).

The user starting over the assistant. A turn is judged chunk by chunk, but the answer should stop the moment the
user starts: :attr:`CaptureChain.on_onset` is called with the stream position of every onset the VAD decides while
the assistant's audio plays, at once, from the processing thread, before the chunk that holds it is complete (the
composition root points it at :meth:`core.engine.engine.Engine.hold_for_onset`).

An echo path that moves. A loaded machine's sound server underruns and catches up: the loudspeaker's latency jumps by
some milliseconds while the reference does not, and for a moment both cancellers let the assistant's voice through.
:class:`~core.audio.audio_io.AudioIO` holds the VAD's echo verdict after the underruns and re-alignments it sees
itself; the chain notices the ones inside the server: the linear filter, once it has learned the path
(``moved_path_min_frames``), makes a frame that is not quiet clearly louder than the microphone
(``moved_path_excess``), so its estimate is strong and wrong, and the VAD treats the assistant's audio as echo for
``moved_path_hold_ms``. Not while the VAD already hears the user: a filter that adapted on a moment of double talk
can look the same, and the user's turn must not be cut. This hold is an option, off by default: replayed through the
chain it took false onsets in jumping rooms down by half or more, but in whole conversations in the speakerphone
room it did not (docs/engine.md).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.audio.aec import AecConfig, EchoCanceller
from core.audio.interfaces import AudioChunk, VadEvent
from core.audio.linear_aec import LinearEchoCanceller
from core.audio.vad import EchoAwareVad, VadConfig, VadDecision
from core.audio.wavin import finite
from core.constants import AEC_FRAME_SAMPLES_16K, CHUNK_SAMPLES_16K, MODEL_INPUT_RATE, VAD_WINDOW_SAMPLES_16K

log = logging.getLogger(__name__)

RATE = MODEL_INPUT_RATE
FRAME = AEC_FRAME_SAMPLES_16K
# process() takes longer blocks in pieces of at most this: the VAD keeps the probabilities of its latest 512
# windows (16 s) until the chain collects them, and a longer block lost the first ones
MAX_BLOCK = 8 * RATE
_NEAR_END_RATIO = 0.1     # AEC3 output above -10 dB of the microphone: the user speaks (the linear filter holds)


@dataclass
class ChainConfig:
    aec: AecConfig | None = None           # None: AecConfig() defaults
    vad: VadConfig | None = None           # None: VadConfig() defaults
    echo_tail_ms: float = 300.0            # the assistant counts as speaking this long after its audio stopped
    reference_lead_ms: float = 0.0         # the reference given with the microphone leads its echo by this much
    moved_path_hold_ms: float = 0.0        # the linear filter, once learned, made a frame louder than the
                                           # microphone: the echo path moved (an underrun the app could not see);
                                           # the VAD treats the assistant's audio as echo this long. OFF (0) by
                                           # default: 1200 halved false onsets replayed through the chain, but
                                           # end to end it did not help (docs/engine.md, "A moved echo path")
    moved_path_excess: float = 1.5         # ... louder: its error this many times the microphone's energy
    moved_path_min_frames: int = 300       # ... learned: adapted on 3 s of echo (10 ms frames): a younger
                                           # filter overshoots now and then (the suite's first seconds)
    moved_path_level_db: float = -12.0     # ... in a frame no quieter than this under the microphone's average
                                           # while the assistant speaks (a quiet frame's ratio says nothing)
    chunk_samples: int = CHUNK_SAMPLES_16K


@dataclass
class Levels:
    """Meter levels over the latest block (~10-160 ms), in dBFS (-120 for silence)."""

    mic_rms_db: float = -120.0
    mic_peak_db: float = -120.0
    clean_rms_db: float = -120.0
    clean_peak_db: float = -120.0
    output_rms_db: float = -120.0
    output_peak_db: float = -120.0
    speech_prob: float = 0.0
    t: float = 0.0


def _db(x: float) -> float:
    return 10.0 * math.log10(x) if x > 1e-12 else -120.0


class CaptureChain:
    """AEC, VAD, levels and chunking on aligned 16 kHz microphone/reference frames.

    Call :meth:`process` from ONE thread (the audio worker, or the file-mode driver). :meth:`set_aec`,
    :meth:`set_gate`, :meth:`restart_vad` and :meth:`hold_echo` may be called from any thread: they take effect at
    the next :meth:`process`.
    """

    def __init__(self, config: ChainConfig | None = None, on_chunk: Callable[[AudioChunk], None] | None = None,
                 vad: EchoAwareVad | None = None,
                 time_of: Callable[[int], float | None] | None = None,
                 on_onset: Callable[[int], None] | None = None) -> None:
        self.config = config or ChainConfig()
        self.on_chunk = on_chunk
        self.on_onset = on_onset          # an onset while the assistant speaks (its stream position), at once
        self.time_of = time_of            # capture time of a stream position (AudioIO: time.monotonic())
        self.aec = EchoCanceller(self.config.aec or AecConfig())
        self.linear = LinearEchoCanceller() if (self.config.aec or AecConfig()).echo_cancellation else None
        self.vad = vad or EchoAwareVad(self.config.vad)
        self._lock = threading.Lock()
        self._pending_aec: AecConfig | None = None
        self._gate_closed = False
        self._restart_vad = False
        self._hold_windows = 0
        self._speaking_until = -1
        self._echo_est = EchoDelayEstimator()
        self._levels = Levels()
        size = self.config.chunk_samples
        self._chunk_clean = np.zeros(size, dtype=np.float32)
        self._chunk_raw = np.zeros(size, dtype=np.float32)
        self._chunk_ref = np.zeros(size, dtype=np.float32)
        self._chunk_near = np.zeros(size, dtype=np.float32)
        self._chunk_fill = 0
        self._chunk_events: list[VadEvent] = []
        self._chunk_speaking = False
        self._window_probs: list[tuple[int, float]] = []
        self._clean = np.zeros(0, dtype=np.float32)
        self._near = np.zeros(0, dtype=np.float32)
        self._excess = np.zeros(0, dtype=np.float32)
        self.position = 0                 # stream position of the next sample to process
        self.chunks_delivered = 0
        self.moved_path_holds = 0         # blocks in which the linear filter said the echo path moved
        self._mic_avg: float | None = None   # the microphone's mean frame energy while the reference plays

    # -- controls (any thread) ---------------------------------------------------------------------------------
    def set_aec(self, config: AecConfig) -> None:
        with self._lock:
            self._pending_aec = config

    def set_gate(self, closed: bool) -> None:
        """Closed: the microphone is muted (or push-to-talk is up); the chain hears silence."""
        self._gate_closed = bool(closed)

    @property
    def gate_closed(self) -> bool:
        return self._gate_closed

    def restart_vad(self) -> None:
        """A turn was decided: the next voiced run is a new onset even if the user is still speaking."""
        self._restart_vad = True

    def hold_echo(self, ms: float) -> None:
        """The echo path changed: the VAD treats the assistant's audio as echo for ``ms`` while the AEC adapts."""
        with self._lock:
            self._hold_windows = max(self._hold_windows, int(ms / 32.0))

    def levels(self) -> Levels:
        return self._levels

    @property
    def echo_delay_ms(self) -> float | None:
        return self._echo_est.delay_ms

    def reset_speaking(self) -> None:
        self._speaking_until = -1

    # -- processing (one thread) -------------------------------------------------------------------------------
    def process(self, mic: np.ndarray, ref: np.ndarray, ref_unshifted: np.ndarray | None = None) -> None:
        """Cancel, detect and chunk ``len(mic)`` samples (a multiple of 10 ms) starting at :attr:`position`.

        ``ref``: the far-end reference as the canceller should see it (leading its echo by ``reference_lead_ms``);
        ``ref_unshifted``: the same reference without that lead, for the echo-delay estimate (default ``ref``)."""
        self._apply_controls()
        mic, ref = finite(mic), finite(ref)   # a broken driver's NaN/Inf never reaches the VAD or a model
        ref_unshifted = None if ref_unshifted is None else finite(ref_unshifted)
        n = len(mic)
        if n % FRAME:
            raise ValueError(f"the capture chain takes whole 10 ms frames, got {n} samples")
        if n > MAX_BLOCK:
            for a in range(0, n, MAX_BLOCK):
                self.process(mic[a:a + MAX_BLOCK], ref[a:a + MAX_BLOCK],
                             None if ref_unshifted is None else ref_unshifted[a:a + MAX_BLOCK])
            return
        if len(self._clean) < n:
            self._clean = np.zeros(n, dtype=np.float32)
            self._near = np.zeros(n, dtype=np.float32)
            self._excess = np.zeros(n, dtype=np.float32)
        clean = self._clean[:n]
        near = self._near[:n]
        excess = self._excess[:n]
        linear = self.linear
        watch_path = linear is not None and self.config.moved_path_hold_ms > 0
        moved = False
        for f in range(0, n, FRAME):
            m, r, c = mic[f:f + FRAME], ref[f:f + FRAME], clean[f:f + FRAME]
            self.aec.process(m, r, c)
            if linear is not None:
                # learn the echo path only from echo: AEC3 cut this frame well under the microphone's level
                mic_e = float(np.einsum("i,i->", m, m))
                adapt = float(np.einsum("i,i->", c, c)) < _NEAR_END_RATIO * mic_e
                linear.process(m, r, adapt, near[f:f + FRAME])
                excess[f:f + FRAME] = linear.excess
                if watch_path:
                    moved = self._echo_path_moved(linear, mic_e, r) or moved
        if moved and not self.vad.in_speech:
            # (while the user is already heard the hold is not needed, and a filter that adapted on a moment of
            # double talk can look the same: the user's turn must not be cut)
            self.moved_path_holds += 1
            log.debug("the echo path moved at %d: the VAD holds the echo", self.position)
            self.vad.hold_echo(int(self.config.moved_path_hold_ms / 32.0))
        if linear is None:
            near[:] = clean
        if self._gate_closed:
            clean[:] = 0.0
            near[:] = 0.0
        n_frames = n // FRAME
        peaks = np.abs(ref).reshape(n_frames, FRAME).max(axis=1)
        speaking = np.zeros(n_frames, dtype=bool)
        tail = int(self.config.echo_tail_ms / 1000 * RATE)
        i0 = self.position
        for k in range(n_frames):
            i = i0 + k * FRAME
            if peaks[k] > 1e-4:
                self._speaking_until = i + FRAME + tail
            speaking[k] = i < self._speaking_until
        events: list[VadEvent] = []
        vad = self.vad
        k = 0
        while k < n_frames:
            e = k + 1
            while e < n_frames and speaking[e] == speaking[k]:
                e += 1
            a, b = k * FRAME, e * FRAME
            found = vad.process(clean[a:b], bool(speaking[k]), ref[a:b], raw_16k=mic[a:b],
                                near_16k=near[a:b] if linear is not None else None,
                                near_excess_16k=excess[a:b] if linear is not None else None)
            if speaking[k] and self.on_onset is not None:
                for ev in found:
                    if ev.kind == "onset":
                        self._tell_onset(_decided_at(ev))
            events += found
            k = e
        self._window_probs += vad.take_window_probs()
        self._meter(mic, clean, ref)
        if speaking.any():
            self._echo_est.add(mic, ref if ref_unshifted is None else ref_unshifted)
            if self._echo_est.delay_ms is not None:
                # the VAD sees the reference ``lead`` ahead of the echo, so its lag is lead + the measured delay
                vad.set_echo_lag_hint(self.config.reference_lead_ms + self._echo_est.delay_ms)
        self._add_to_chunk(i0, clean, mic, ref, near, events, bool(speaking.any()))
        self.position += n

    def _tell_onset(self, position: int) -> None:
        try:
            self.on_onset(position)
        except Exception:
            log.exception("on_onset callback failed")

    def _echo_path_moved(self, linear: LinearEchoCanceller, mic_e: float, ref: np.ndarray) -> bool:
        """The linear filter had learned the echo path and now makes a frame that is not quiet clearly louder than
        the microphone: its estimate is strong and wrong, so the path moved under it (an underrun or a catch-up
        of the sound server, which the app does not see). A user talking over the echo takes a frame a little over
        the microphone now and then, in quiet frames or a young filter more: in the suite's recorded barge-ins and
        backchannels no frame passed all three bars (measured: docs/engine.md)."""
        cfg = self.config
        if float(np.max(np.abs(ref))) > 1e-4:
            self._mic_avg = mic_e if self._mic_avg is None else 0.995 * self._mic_avg + 0.005 * mic_e
        return (linear.adapted_frames >= cfg.moved_path_min_frames and linear.excess > cfg.moved_path_excess
                and self._mic_avg is not None and mic_e >= self._mic_avg * 10 ** (cfg.moved_path_level_db / 10))

    def _apply_controls(self) -> None:
        with self._lock:
            pending, self._pending_aec = self._pending_aec, None
            hold, self._hold_windows = self._hold_windows, 0
        if pending is not None:
            self.aec = EchoCanceller(pending)
            if not pending.echo_cancellation:
                self.linear = None
            elif self.linear is None:
                self.linear = LinearEchoCanceller()
            self.vad.reset_near_end()
        if hold:
            self.vad.hold_echo(hold)
        if self._restart_vad:
            self._restart_vad = False
            self.vad.restart_segmentation()

    def _meter(self, mic: np.ndarray, clean: np.ndarray, ref: np.ndarray) -> None:
        vals = []
        for x in (mic, clean, ref):
            vals.append(_db(float(np.einsum("i,i->", x, x)) / len(x)))
            vals.append(_db(float(np.max(np.abs(x))) ** 2))
        self._levels = Levels(*vals, speech_prob=float(self.vad.probability), t=time.monotonic())

    def _add_to_chunk(self, i0: int, clean: np.ndarray, mic: np.ndarray, ref: np.ndarray, near: np.ndarray,
                      events: list[VadEvent], speaking: bool) -> None:
        self._chunk_events.extend(events)
        self._chunk_speaking = self._chunk_speaking or speaking
        size = self.config.chunk_samples
        pos = 0
        n = len(clean)
        while pos < n:
            f = self._chunk_fill
            k = min(n - pos, size - f)
            self._chunk_clean[f:f + k] = clean[pos:pos + k]
            self._chunk_raw[f:f + k] = mic[pos:pos + k]
            self._chunk_ref[f:f + k] = ref[pos:pos + k]
            self._chunk_near[f:f + k] = near[pos:pos + k]
            self._chunk_fill += k
            pos += k
            if self._chunk_fill == size:
                self._deliver(i0 + pos - size)

    def _deliver(self, start: int) -> None:
        size = self.config.chunk_samples
        end = start + size
        mine = [p for p in self._window_probs if start < p[0] <= end]
        self._window_probs = [p for p in self._window_probs if p[0] > end]
        probs = np.zeros(size // VAD_WINDOW_SAMPLES_16K, dtype=np.float32)
        for pos, p in mine:
            idx = (pos - start) // VAD_WINDOW_SAMPLES_16K - 1
            if 0 <= idx < len(probs):
                probs[idx] = p
        in_chunk = [e for e in self._chunk_events if _decided_at(e) <= end]
        self._chunk_events = [e for e in self._chunk_events if _decided_at(e) > end]
        chunk = AudioChunk(
            samples_16k=self._chunk_clean.copy(), start=start,
            t_start=self.time_of(start) if self.time_of is not None else None,
            vad_events=in_chunk, vad_probs=probs, assistant_speaking=self._chunk_speaking,
            speech_prob=float(probs.max()) if len(probs) else 0.0,
            raw_16k=self._chunk_raw.copy(), reference_16k=self._chunk_ref.copy(),
            near_16k=self._chunk_near.copy() if self.linear is not None else None)
        self._chunk_fill = 0
        self._chunk_speaking = False
        self.chunks_delivered += 1
        if self.on_chunk is not None:
            self.on_chunk(chunk)


def _decided_at(event: VadEvent) -> int:
    """Stream position where the VAD decided ``event`` (its ``sample`` may lie in an earlier chunk)."""
    return event.detected_at if isinstance(event, VadDecision) and event.detected_at >= 0 else event.sample


class EchoDelayEstimator:
    """Residual echo delay (after the caller's alignment) from the raw microphone and the unshifted reference.

    Collects ~1.5 s while the assistant speaks, then cross-correlates (FFT) once; keeps the median of the last
    few estimates that had a clear peak.
    """

    def __init__(self, seconds: float = 1.5, max_delay_ms: float = 250.0, every: int = 3) -> None:
        self.n = int(seconds * RATE)
        self.every = every      # estimate from one buffer in ``every`` (it changes rarely)
        self.buffers = 0
        self.mic = np.zeros(self.n, dtype=np.float32)
        self.ref = np.zeros(self.n, dtype=np.float32)
        self.fill = 0
        self.max_lag = int(max_delay_ms / 1000 * RATE)
        self.estimates: list[float] = []
        self.delay_ms: float | None = None

    def add(self, mic: np.ndarray, ref: np.ndarray) -> None:
        pos = 0
        while pos < len(mic):
            k = min(len(mic) - pos, self.n - self.fill)
            self.mic[self.fill:self.fill + k] = mic[pos:pos + k]
            self.ref[self.fill:self.fill + k] = ref[pos:pos + k]
            self.fill += k
            pos += k
            if self.fill == self.n:
                if self.buffers % self.every == 0 or self.delay_ms is None:
                    self._estimate()
                self.buffers += 1
                self.fill = 0

    def _estimate(self) -> None:
        m, r = self.mic[:self.fill].astype(np.float64), self.ref[:self.fill].astype(np.float64)
        er, em = float(np.einsum("i,i->", r, r)), float(np.einsum("i,i->", m, m))
        if er < 1e-6 or em < 1e-8:
            return
        n = 1 << int(math.ceil(math.log2(2 * len(m))))
        xc = np.fft.irfft(np.fft.rfft(m, n) * np.conj(np.fft.rfft(r, n)), n)
        lags = xc[:self.max_lag + 1]  # the microphone lags the reference: non-negative lags only
        k = int(np.argmax(np.abs(lags)))
        peak = abs(lags[k])
        norm = math.sqrt(em * er)
        if norm > 0 and peak / norm > 0.3:
            self.estimates = (self.estimates + [k / RATE * 1000])[-5:]
            self.delay_ms = float(np.median(self.estimates))
