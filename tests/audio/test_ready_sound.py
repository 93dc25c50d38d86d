"""The ready sound (core.audio.ready_sound): what it is, and what it is for. Played through a simulated room and the
file-mode capture chain (AEC3 with the played reference, the linear canceller, the VAD), it leaves the linear
canceller knowing the echo path, so the first answer of a session is cancelled from its first syllable."""

from __future__ import annotations

import numpy as np
import pytest

from core.audio.ready_sound import DURATION_S, LEVEL_DBFS, ready_sound
from core.audio.room import EchoRoom
from core.audio.testsignals import have_espeak, speech_seconds
from core.constants import MODEL_INPUT_RATE as RATE
from core.engine.filemode import file_chain


@pytest.mark.parametrize("rate", [16_000, 22_050, 24_000, 48_000])
def test_the_sound_is_short_soft_broadband_and_always_the_same(rate):
    x = ready_sound(rate)
    assert x.dtype == np.float32 and len(x) == round(DURATION_S * rate)
    assert abs(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))) - LEVEL_DBFS) < 0.1
    assert np.max(np.abs(x)) < 0.25 and abs(x[0]) < 1e-3 and abs(x[-1]) < 1e-3     # no click at either end
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / rate)
    speech_band = power[(f >= 150) & (f <= 7000)].sum() / power.sum()
    assert speech_band > 0.99                                        # all of it where speech echoes
    octaves = [power[(f >= lo) & (f < 2 * lo)].sum() / power.sum() for lo in (200, 400, 800, 1600, 3200)]
    assert min(octaves) > 0.05, octaves                              # every octave of speech is taught
    assert np.array_equal(x, ready_sound(rate))


def _first_answer_erle(room: str, with_sound: bool) -> float:
    """ERLE (dB, the linear canceller's output against the microphone) over the first 0.25 s of a first answer
    that starts 1 s after the ready sound (or after nothing)."""
    speech = speech_seconds(1.5, rate=RATE).astype(np.float32)
    lead = ready_sound(RATE) if with_sound else np.zeros(0, np.float32)
    far = np.concatenate([lead, np.zeros(RATE, np.float32), speech])
    far = far[:len(far) // 2560 * 2560]
    mic = EchoRoom(room, seed=5).mic(np.zeros_like(far), far)
    chain = file_chain(EchoRoom(room, seed=5))
    chunks = []
    chain.on_chunk = chunks.append
    for a in range(0, len(far), 2560):
        chain.process(mic[a:a + 2560], far[a:a + 2560])
    raw = np.concatenate([c.raw_16k for c in chunks])
    near = np.concatenate([c.near_16k for c in chunks])
    onsets = [e for c in chunks for e in c.vad_events if e.kind == "onset"]
    assert not onsets, "the assistant's own sound or voice opened a user turn"
    start = len(lead) + RATE + int(np.argmax(np.abs(speech) > 0.01))
    span = slice(start, start + RATE // 4)
    return float(10 * np.log10(np.sum(raw[span].astype(np.float64) ** 2)
                               / (np.sum(near[span].astype(np.float64) ** 2) + 1e-12)))


@pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")
@pytest.mark.parametrize("room", ["laptop", "speakerphone"])
def test_after_the_sound_the_first_answer_is_cancelled_from_its_start(room):
    cold, taught = _first_answer_erle(room, False), _first_answer_erle(room, True)
    assert taught >= 12.0, (cold, taught)          # measured 14-18 dB (2-5 dB without the sound)
    assert taught >= cold + 6.0, (cold, taught)
