"""The "ready" sound: a soft whoosh of one second Parley plays when its audio opens.

It tells the user that Parley listens, and it teaches both echo cancellers the room's echo path before the first
answer. Without it the first answer of a session starts on cancellers that know nothing: in the simulated laptop
room the linear canceller removed 2-6 dB of the echo over the answer's first half second, so a user who went on
talking right after a short pause, or interrupted early, was not heard over it. After this sound, 14-20 dB
(docs/engine.md, "The ready sound"). A second: shorter ones taught too little (0.5 s left the filter at 7-8 dB of
cancellation, 0.7 s at 13-14 dB: too little for a user 3-7 dB under the echo to stand out of its residual).

It is noise, not a tone, because a canceller learns the echo path only at the frequencies it hears: a chord or a
sweep taught the linear canceller about as little as no sound at all. Band-limited (150 Hz to 7 kHz, the band speech
echoes in), pink-tilted, a 0.1 s rise and a 0.15 s fall, at about -32 dBFS RMS (the Lite voice plays at about -25), so
it sounds like a breath of air rather than a hiss. The same samples every time (a fixed seed)."""

from __future__ import annotations

import numpy as np

DURATION_S = 1.0
LEVEL_DBFS = -32.0
TAG = -1                  # the playback tag of the sound (answers are tagged with their turn, from 1)
_SEED = 20261206
_ATTACK_S, _RELEASE_S = 0.1, 0.15


def ready_sound(rate: int) -> np.ndarray:
    """The sound at ``rate`` Hz, float32 mono."""
    n = int(round(DURATION_S * rate))
    rng = np.random.default_rng(_SEED)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / rate)
    top = min(7000.0, 0.45 * rate)
    shape = np.zeros_like(f)
    band = (f >= 150.0) & (f <= top)
    shape[band] = (f[band] / 150.0) ** -0.3          # gently pink: less hiss than white noise
    x = np.fft.irfft(spectrum * shape, n)
    t = np.arange(n) / rate
    env = np.ones(n)
    rise, fall = t < _ATTACK_S, t > DURATION_S - _RELEASE_S
    env[rise] = np.sin(0.5 * np.pi * t[rise] / _ATTACK_S) ** 2
    env[fall] = np.cos(0.5 * np.pi * (t[fall] - (DURATION_S - _RELEASE_S)) / _RELEASE_S) ** 2
    x = x * env
    x *= 10.0 ** (LEVEL_DBFS / 20.0) / max(float(np.sqrt(np.mean(x ** 2))), 1e-12)
    return x.astype(np.float32)


def play_ready_sound(sink, rate: int, tag: int = TAG) -> None:
    """Queue the sound on ``sink`` (an ``AudioSink``) at ``rate`` Hz under ``tag`` (negative: never a turn's), as
    complete."""
    sink.enqueue(ready_sound(rate), rate, tag)
    sink.finish(tag)
