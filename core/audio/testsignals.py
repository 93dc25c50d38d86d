"""Test and benchmark signals: speech from espeak-ng, tones. Used by ``parley bench audio`` and the audio tests."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile

import numpy as np

from core.audio.resample import resample

ASSISTANT_TEXT = (
    "Sure. The weather tomorrow looks mild, with a light breeze from the west and some sunshine in the afternoon. "
    "If you are planning a walk, the morning will be a little cooler, so take a jacket. "
    "I can also read you the forecast for the weekend, or set a reminder for your appointment at nine. "
    "By the way, the library closes early on Friday, and the bakery on the corner has fresh bread after seven."
)
USER_TEXT = "Wait, stop please, I have a different question about tomorrow."


class SpeechUnavailable(RuntimeError):
    """espeak-ng is not installed."""


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=16)
def _espeak_cached(text: str, voice: str, wpm: int) -> tuple[bytes, int]:
    import soundfile as sf

    if not have_espeak():
        raise SpeechUnavailable("espeak-ng is not installed (apt-get install espeak-ng)")
    fd, path = tempfile.mkstemp(suffix=".wav", prefix="parley_tts_")
    os.close(fd)
    try:
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", path, text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        data, rate = sf.read(path, dtype="float32", always_2d=False)
    finally:
        os.unlink(path)
    if data.ndim > 1:
        data = data.mean(axis=1)
    return data.astype(np.float32).tobytes(), int(rate)


def speech(text: str, voice: str = "en-us", wpm: int = 160, rate: int | None = None,
           peak: float = 0.5) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` with espeak-ng; returns (float32 samples, rate). ``rate`` resamples (soxr); ``peak``
    normalises the loudest sample."""
    raw, native = _espeak_cached(text, voice, wpm)
    x = np.frombuffer(raw, dtype=np.float32).copy()
    if rate is not None and rate != native:
        x = resample(x, native, rate)
        native = rate
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    if top > 0 and peak:
        x *= peak / top
    return x, native


def speech_seconds(seconds: float, voice: str = "en-us", rate: int = 22050, peak: float = 0.5) -> np.ndarray:
    """At least ``seconds`` of continuous assistant-like speech (the paragraph repeated)."""
    x, _ = speech(ASSISTANT_TEXT, voice=voice, rate=rate, peak=peak)
    reps = int(np.ceil(seconds * rate / len(x)))
    return np.tile(x, max(1, reps))[: int(seconds * rate)]


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3, fade_ms: float = 5.0) -> np.ndarray:
    """A sine with short fades at both ends."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    f = min(n // 2, int(fade_ms / 1000 * rate))
    if f > 0:
        ramp = np.linspace(0.0, 1.0, f, dtype=np.float32)
        x[:f] *= ramp
        x[-f:] *= ramp[::-1]
    return x


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """Frequency of the strongest spectral peak (parabolic interpolation), for pitch checks."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft(x * w))
    k = int(np.argmax(spec[1:])) + 1
    if 1 <= k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1] + 1e-12), np.log(spec[k] + 1e-12), np.log(spec[k + 1] + 1e-12)
        k = k + 0.5 * (a - c) / (a - 2 * b + c)
    return float(k * rate / len(x))
