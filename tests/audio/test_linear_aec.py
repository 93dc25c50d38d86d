"""The linear echo canceller (core.audio.linear_aec) in the simulated rooms: it learns the echo path within seconds,
the two-length filter pair at least as fast as the long filter alone and as deep; a silent reference costs nothing
and changes nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.audio.linear_aec import LinearEchoCanceller
from core.audio.room import PRESETS, EchoRoom
from core.audio.testsignals import have_espeak, speech_seconds

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")


def _erle_per_second(canceller: LinearEchoCanceller, mic: np.ndarray, far: np.ndarray) -> list[float]:
    out = np.zeros_like(mic)
    for f in range(0, len(far) - 159, 160):
        canceller.process(mic[f:f + 160], far[f:f + 160], True, out[f:f + 160])
    return [10 * np.log10(np.sum(mic[a:a + 16000] ** 2) / (np.sum(out[a:a + 16000] ** 2) + 1e-12))
            for a in range(0, len(far) - 15999, 16000)]


@pytest.mark.parametrize("room", ["laptop", "speakerphone"])
def test_the_canceller_learns_the_echo_path_within_seconds(room):
    far = speech_seconds(8.0, rate=16000).astype(np.float32)
    quiet_room = dataclasses.replace(PRESETS[room], snr_db=None)     # the echo alone: ERLE is what is cancelled
    mic = EchoRoom(quiet_room, seed=3).mic(np.zeros_like(far), far)
    pair = _erle_per_second(LinearEchoCanceller(), mic, far)
    single = _erle_per_second(LinearEchoCanceller(short_taps_s=None), mic, far)
    assert np.mean(pair[1:3]) >= 11.0, pair                 # the first answer's first seconds (measured 14-18 dB)
    assert np.mean(pair[4:]) >= 22.0, pair                  # settled (measured 27-29 dB)
    assert np.mean(pair[1:3]) >= np.mean(single[1:3]), (pair, single)   # the short filter helps early...
    assert np.mean(pair[4:]) >= np.mean(single[4:]) - 1.0, (pair, single)   # ...and the long one later


def test_a_silent_reference_leaves_the_microphone_as_it_is():
    rng = np.random.default_rng(0)
    far = np.concatenate([0.1 * rng.standard_normal(16000), np.zeros(16000)]).astype(np.float32)
    mic = (0.5 * np.roll(far, 40) + 0.001 * rng.standard_normal(len(far))).astype(np.float32)
    aec = LinearEchoCanceller()
    out = np.zeros_like(mic)
    for f in range(0, len(far), 160):
        aec.process(mic[f:f + 160], far[f:f + 160], True, out[f:f + 160])
    assert 10 * np.log10(np.sum(mic[8000:16000] ** 2) / np.sum(out[8000:16000] ** 2)) > 15   # it cancels...
    tail = 16000 + 5120 + 640      # ...and once the reference has been silent for the filter's span: the mic
    np.testing.assert_array_equal(out[tail:], mic[tail:])
    aec.reset()
    np.testing.assert_array_equal(aec.process(mic[:160], far[:160], False), mic[:160])   # forgotten: nothing


@pytest.mark.parametrize("room", ["laptop", "speakerphone"])
def test_a_learned_filter_says_how_much_louder_than_the_microphone_a_moved_path_makes_it(room):
    """``excess`` (error / microphone energy of the last frame): under 1 while the path holds, far over 1 in the
    frames right after the loudspeaker's latency jumped by 40 ms (the capture chain's moved-path hold uses it)."""
    far = speech_seconds(10.0, rate=16000).astype(np.float32)
    quiet_room = dataclasses.replace(PRESETS[room], snr_db=None)
    mic = EchoRoom(quiet_room, seed=3).mic(np.zeros_like(far), far)
    jump = 640                                             # 40 ms at 16 kHz, from 6 s on
    moved = mic.copy()
    moved[6 * 16000 + jump:] = mic[6 * 16000:-jump]
    moved[6 * 16000:6 * 16000 + jump] = 0.0
    for signal, expect_moved in ((mic, False), (moved, True)):
        c = LinearEchoCanceller()
        excess = []
        for f in range(0, len(far) - 159, 160):
            c.process(signal[f:f + 160], far[f:f + 160], f < 6 * 16000)   # it learns the first 6 s only
            loud = float(np.dot(signal[f:f + 160], signal[f:f + 160])) > 160 * 10 ** (-40 / 10)
            excess.append(c.excess if loud else 0.0)
        after = np.array(excess[600:700])                  # the second after 6 s
        if expect_moved:
            assert np.sum(after > 1.5) >= 10, np.round(after, 2)
        else:
            assert np.sum(after > 1.5) == 0, np.round(after, 2)
