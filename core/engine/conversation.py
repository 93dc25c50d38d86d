"""Synthetic spoken conversations for benchmarks and tests: espeak-ng sentences, noises and pauses placed on one
16 kHz timeline.

espeak-ng is a system program (``apt-get install espeak-ng``); :func:`espeak` raises FileNotFoundError without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np

from core.constants import MODEL_INPUT_RATE


def espeak(text: str, voice: str = "en-us", speed: int = 160, amplitude: int = 100) -> np.ndarray:
    """``text`` spoken by espeak-ng, as 16 kHz mono float32 (soxr resampling from espeak's 22.05 kHz)."""
    import soundfile as sf
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError("espeak-ng is not installed (apt-get install espeak-ng)")
    fd, path = tempfile.mkstemp(suffix=".wav", prefix="parley-espeak-")
    os.close(fd)
    try:
        subprocess.run([exe, "-v", voice, "-s", str(speed), "-a", str(amplitude), "-w", path, text],
                       check=True, capture_output=True, timeout=60)
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    finally:
        os.unlink(path)
    mono = data.mean(axis=1)
    if rate != MODEL_INPUT_RATE:
        mono = soxr.resample(mono, rate, MODEL_INPUT_RATE, quality="HQ")
    return _trim(np.asarray(mono, dtype=np.float32))


def _trim(x: np.ndarray, level: float = 1e-3) -> np.ndarray:
    idx = np.flatnonzero(np.abs(x) > level)
    return x[idx[0]:idx[-1] + 1] if len(idx) else x


def cough(seconds: float = 0.25, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A cough-like burst: band-limited noise with a fast attack and an exponential decay."""
    rng = np.random.default_rng(seed)
    n = int(seconds * MODEL_INPUT_RATE)
    noise = rng.standard_normal(n).astype(np.float32)
    kernel = np.ones(6, np.float32) / 6      # soften the top end a little
    noise = np.convolve(noise, kernel, mode="same")
    t = np.arange(n) / MODEL_INPUT_RATE
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / (seconds / 3))
    burst = noise * env
    return (level * burst / (np.abs(burst).max() + 1e-9)).astype(np.float32)


@dataclass
class Placed:
    at: float            # seconds on the conversation timeline
    audio: np.ndarray    # 16 kHz mono float32
    label: str = ""

    @property
    def end(self) -> float:
        return self.at + len(self.audio) / MODEL_INPUT_RATE


def mix(items: list[Placed], tail_s: float = 3.0) -> np.ndarray:
    """Sum the placed clips on one timeline (plus ``tail_s`` of silence at the end)."""
    end = max((p.end for p in items), default=0.0) + tail_s
    out = np.zeros(int(np.ceil(end * MODEL_INPUT_RATE)), np.float32)
    for p in items:
        i = int(round(p.at * MODEL_INPUT_RATE))
        out[i:i + len(p.audio)] += p.audio
    return np.clip(out, -1.0, 1.0)


def sequential(clips: list[np.ndarray], gap_s: float, lead_s: float = 0.5) -> list[Placed]:
    """Clips one after another with ``gap_s`` of silence after each."""
    items, t = [], lead_s
    for clip in clips:
        items.append(Placed(t, clip))
        t += len(clip) / MODEL_INPUT_RATE + gap_s
    return items
