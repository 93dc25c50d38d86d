"""Acoustic echo cancellation with WebRTC AEC3 (livekit's AudioProcessingModule), 10 ms frames at 16 kHz.

For every 10 ms microphone frame the caller passes the far-end reference frame that belongs to it (the samples the
output stream really played, aligned on the audio clock; see :mod:`core.audio.audio_io`). The reference is fed with
``process_reverse_stream`` first, then the microphone frame with ``process_stream``; both work in place on
preallocated buffers, so nothing is allocated per frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from core.constants import AEC_FRAME_SAMPLES_16K, MODEL_INPUT_RATE

log = logging.getLogger(__name__)


@dataclass
class AecConfig:
    echo_cancellation: bool = True    # switch off for headsets
    noise_suppression: bool = False
    high_pass_filter: bool = True
    auto_gain_control: bool = False
    stream_delay_ms: int | None = None  # hint only; AEC3 estimates the delay itself

    @property
    def any_enabled(self) -> bool:
        return self.echo_cancellation or self.noise_suppression or self.high_pass_filter or self.auto_gain_control


class EchoCanceller:
    """One WebRTC audio processing module. Not thread-safe: use it from the audio worker thread only."""

    frame_samples = AEC_FRAME_SAMPLES_16K
    rate = MODEL_INPUT_RATE

    def __init__(self, config: AecConfig | None = None) -> None:
        self.config = config or AecConfig()
        self._apm = None
        self.frames = 0
        n = self.frame_samples
        self._mic_bytes = bytearray(2 * n)
        self._far_bytes = bytearray(2 * n)
        self._mic_i16 = np.frombuffer(self._mic_bytes, dtype=np.int16)
        self._far_i16 = np.frombuffer(self._far_bytes, dtype=np.int16)
        self._tmp = np.zeros(n, dtype=np.float32)
        self._mic_frame = None
        self._far_frame = None
        if self.config.any_enabled:
            self._build()

    def _build(self) -> None:
        from livekit import rtc

        c = self.config
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=c.echo_cancellation, noise_suppression=c.noise_suppression,
            high_pass_filter=c.high_pass_filter, auto_gain_control=c.auto_gain_control)
        self._mic_frame = rtc.AudioFrame(self._mic_bytes, self.rate, 1, self.frame_samples)
        self._far_frame = rtc.AudioFrame(self._far_bytes, self.rate, 1, self.frame_samples)
        if c.echo_cancellation and c.stream_delay_ms is not None:
            self._apm.set_stream_delay_ms(int(c.stream_delay_ms))
        log.debug("APM created: %s", c)

    @property
    def enabled(self) -> bool:
        return self._apm is not None

    def reset(self) -> None:
        """Start from scratch (new echo path, e.g. another device)."""
        self._apm = None
        self.frames = 0
        if self.config.any_enabled:
            self._build()

    def _quantize(self, x: np.ndarray, out_i16: np.ndarray) -> None:
        np.multiply(x, 32768.0, out=self._tmp)
        np.clip(self._tmp, -32768.0, 32767.0, out=self._tmp)
        out_i16[:] = self._tmp

    def process(self, mic: np.ndarray, far: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Cancel the echo of ``far`` (160 float32 samples) in ``mic`` (160 float32); returns the cleaned frame.

        With every stage disabled the microphone frame is returned unchanged (a copy, or written into ``out``).
        """
        if out is None:
            out = np.empty(self.frame_samples, dtype=np.float32)
        if self._apm is None:
            out[:] = mic
            return out
        self._quantize(far, self._far_i16)
        self._quantize(mic, self._mic_i16)
        self._apm.process_reverse_stream(self._far_frame)
        self._apm.process_stream(self._mic_frame)
        np.multiply(self._mic_i16, 1.0 / 32768.0, out=out, casting="unsafe")
        self.frames += 1
        return out

    def process_block(self, mic: np.ndarray, far: np.ndarray) -> np.ndarray:
        """Offline helper: cancel a whole signal (length a multiple of 160 is used; the rest is dropped)."""
        n = (min(len(mic), len(far)) // self.frame_samples) * self.frame_samples
        out = np.zeros(n, dtype=np.float32)
        f = self.frame_samples
        for i in range(0, n, f):
            self.process(mic[i:i + f], far[i:i + f], out[i:i + f])
        return out
