"""An echo path that moves under the cancellers (core.audio.chain, core.audio.linear_aec, core.audio.room).

A loaded machine's sound server underruns and catches up: the loudspeaker's latency jumps by some milliseconds
while the reference the app hands to the cancellers does not. For a moment both cancellers lose the echo, and what
they let through is the assistant's voice, which the VAD must not take for a user. The app cannot see these jumps
(they happen in the server), so the capture chain notices them itself: the linear filter, once it has learned the
path, makes a frame clearly louder than the microphone (its estimate is strong and wrong), and the chain holds the
VAD's echo verdict while the cancellers re-converge (``ChainConfig.moved_path_hold_ms``, an option that is off by
default: docs/engine.md says why).

The simulated rooms' ``glitch_ms``/``glitches_per_min`` make such jumps; everything here is the real chain (AEC3,
the linear canceller, silero) on espeak-ng speech."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.audio.aec import AecConfig
from core.audio.chain import CaptureChain, ChainConfig
from core.audio.room import EchoRoom, with_changes
from core.audio.testsignals import USER_TEXT, have_espeak, speech, speech_seconds
from core.audio.vad import VadConfig

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng not installed")

RATE = 16_000
BLOCK = 2560
HOLD_MS = 1200.0


def _run(room: EchoRoom, far: np.ndarray, user: np.ndarray | None = None, **chain_changes) -> tuple[list, CaptureChain]:
    """Onsets (seconds) the chain reports while the assistant speaks, and the chain."""
    onsets: list[float] = []

    def on_chunk(c) -> None:
        onsets.extend(e.sample / RATE for e in c.vad_events if e.kind == "onset" and c.assistant_speaking)

    vad = chain_changes.pop("vad", None)
    config = ChainConfig(aec=AecConfig(), vad=vad, moved_path_hold_ms=HOLD_MS)   # the option on (off by default)
    chain = CaptureChain(replace(config, **chain_changes), on_chunk=on_chunk)
    near = np.zeros_like(far) if user is None else user
    for i in range(0, len(far) - BLOCK + 1, BLOCK):
        chain.process(room.mic(near[i:i + BLOCK], far[i:i + BLOCK]), far[i:i + BLOCK])
    return onsets, chain


@pytest.mark.parametrize("name", ["laptop", "speakerphone"])
def test_a_jumping_echo_path_opens_no_false_turn(name):
    far = speech_seconds(45.0, rate=RATE).astype(np.float32)
    glitchy = with_changes(name, glitch_ms=60.0, glitches_per_min=10.0)
    held, chain = _run(EchoRoom(glitchy, seed=2), far)
    assert chain.moved_path_holds > 0                    # the chain saw the path move
    unheld, _ = _run(EchoRoom(glitchy, seed=2), far, moved_path_hold_ms=0.0)
    assert len(held) <= len(unheld), (held, unheld)
    assert len(held) <= 1, held
    # the VAD's optional dominant near-end rule does not overrule a hold either
    rules = VadConfig(near_end_dominant_db=15.0, speaking_dip_prob=0.0)
    held_rules, _ = _run(EchoRoom(glitchy, seed=2), far, vad=rules)
    assert len(held_rules) <= 1, held_rules


@pytest.mark.parametrize("name", ["laptop", "speakerphone"])
def test_a_steady_path_never_holds_and_a_user_over_the_echo_is_heard_at_once(name):
    far = speech_seconds(14.0, rate=RATE).astype(np.float32)
    voice, _ = speech(USER_TEXT, voice="en-us+f3", rate=RATE, peak=0.5)
    user = np.zeros_like(far)
    at = 8 * RATE                                          # the filter has learned the path by then
    user[at:at + len(voice)] = voice[:len(far) - at]
    voice_start = at + int(np.flatnonzero(np.abs(voice) > 0.05)[0])
    onsets, chain = _run(EchoRoom(name, seed=4), far, user)
    assert chain.moved_path_holds == 0
    assert chain.linear.adapted_frames >= chain.config.moved_path_min_frames
    assert [t for t in onsets if t < voice_start / RATE - 0.3] == []
    later = [t for t in onsets if t >= voice_start / RATE - 0.3]
    assert later and later[0] - voice_start / RATE <= 0.3, (later, voice_start / RATE)
