"""Recording a live conversation: AudioIO chunks and the engine's sink feed a :class:`SessionRecorder`.

Wiring (``core.compose.live.LiveStack`` does this)::

    rec = SessionRecorder.from_settings(settings, profile=..., devices=..., mode="live"); rec.start()
    tap = LiveRecording(rec, clock=engine_bus.clock)         # the session clock the events are stamped with
    audio = AudioIO(config, on_chunk=lambda c: (tap.on_chunk(c), source.push(c)))
    engine.sink = tap.wrap_sink(audio.player)
    rec.attach(bus)
    ...
    rec.close()

From each :class:`core.audio.interfaces.AudioChunk` (160 ms on the 16 kHz microphone timeline, ``start`` = position):

* ``mic_raw.wav``   ``raw_16k``: the microphone before echo cancellation, resampled to 16 kHz by the audio layer
  (AudioIO has no tap for the device-rate blocks; ``meta.devices`` records the device rate);
* ``mic_clean.wav`` ``samples_16k``: what the VAD and the engine got;
* ``playback.wav``  ``reference_16k``: the far-end reference the echo canceller was given for those samples
  (what the output stream played, aligned by the audio layer's timestamps, ``reference_lead_ms`` ahead of its echo);
* ``assistant.wav`` every piece the engine enqueued, at the backend's rate, as generated.

Every chunk is placed by its ``start`` (``mic_sample``), so a dropped chunk leaves silence, never a shift. The
session time of mic sample 0 comes from ``chunk.t_start`` (monotonic) and the clock's offset.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from core.audio.interfaces import AudioChunk, AudioSink
from core.constants import MODEL_INPUT_RATE
from core.session.recorder import SessionRecorder
from core.session.teesink import TeeSink

log = logging.getLogger(__name__)


class LiveRecording:
    """Feeds a recorder from AudioIO chunks and the engine's sink (see the module docstring)."""

    def __init__(self, recorder: SessionRecorder, clock: Any = None, reference_lead_ms: float | None = None) -> None:
        self.recorder = recorder
        self.clock = clock
        self._base: int | None = None        # 16 kHz stream position of the first recorded chunk
        self._noted = False
        self._reference_lead_ms = reference_lead_ms
        self.chunks = 0
        self._raw_written = 0

    def now(self) -> float:
        """Session seconds on the engine's clock (the recorder's own clock when there is none)."""
        if self.clock is not None:
            return float(self.clock.now())
        return self.recorder.session_time()

    def _session_time_of(self, monotonic_t: float) -> float:
        return monotonic_t - (time.monotonic() - self.now())

    def on_chunk(self, chunk: AudioChunk, muted: bool = False) -> None:
        """Record one AudioChunk (call from the audio worker thread: it only queues copies).

        ``muted``: the user muted the microphone (or push-to-talk is up): both mic streams get silence for this
        chunk, so nothing the user did not mean to say is kept; the reference is still recorded."""
        start = int(chunk.start)
        if self._base is None:
            self._base = start
        if not self._noted:
            self._noted = True
            info: dict[str, Any] = {"source": "AudioIO.raw_16k"}
            self.recorder.set_stream_info("mic_raw", **info)
            self.recorder.set_stream_info("mic_clean", source="AudioIO.samples_16k (after AEC)")
            ref_info: dict[str, Any] = {"source": "AudioIO.reference_16k (echo canceller reference)"}
            if self._reference_lead_ms is not None:
                ref_info["reference_lead_ms"] = self._reference_lead_ms
            self.recorder.set_stream_info("playback", **ref_info)
        pos = start - self._base
        raw = chunk.raw_16k if chunk.raw_16k is not None else chunk.samples_16k
        clean = chunk.samples_16k
        if muted:
            raw = np.zeros(len(raw), np.float32)
            clean = np.zeros(len(clean), np.float32)
        if self.chunks == 0:   # pos == 0: the first chunk starts the timeline
            t0 = self._session_time_of(float(chunk.t_start)) if chunk.t_start else self.now()
            self.recorder.write_mic_raw(raw, MODEL_INPUT_RATE, t=t0)
            self._raw_written = len(raw)
        else:
            self._write_raw_at(raw, pos)
        self.recorder.write_mic_clean(clean, MODEL_INPUT_RATE, mic_sample=pos)
        ref = chunk.reference_16k
        if ref is not None:
            self.recorder.write_playback(ref, MODEL_INPUT_RATE, mic_sample=pos)
        self.chunks += 1

    def _write_raw_at(self, raw: np.ndarray, pos: int) -> None:
        # mic_raw defines the timeline and is appended as it comes: a gap (a dropped chunk) becomes silence here
        expected = self._raw_written
        if pos > expected:
            self.recorder.write_mic_raw(np.zeros(pos - expected, np.float32), MODEL_INPUT_RATE)
            self._raw_written = pos
        elif pos < expected:
            raw = raw[expected - pos:]
        if len(raw):
            self.recorder.write_mic_raw(raw, MODEL_INPUT_RATE)
            self._raw_written += len(raw)

    def wrap_sink(self, sink: AudioSink) -> AudioSink:
        """The sink to give the Engine: ``sink`` itself plus recording of the assistant's output."""
        return TeeSink(sink, self.recorder, self.now)
