"""Player (the AudioSink) driven by calling its callback-side ``fill`` directly, as the output stream does."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.audio.player import Player
from core.audio.testsignals import dominant_frequency, tone

DEV = 48000


def drain(player: Player, seconds: float, block: int = 512) -> np.ndarray:
    out = []
    buf = np.zeros(block, dtype=np.float32)
    for _ in range(int(seconds * DEV / block)):
        player.fill(buf)
        out.append(buf.copy())
    return np.concatenate(out)


def test_resamples_to_the_device_rate_and_counts_played_samples_exactly():
    p = Player(DEV)
    x = tone(440.0, 1.0, 24000, amplitude=0.4)
    p.enqueue(x[:12000], 24000, tag=5)
    p.enqueue(x[12000:], 24000, tag=5)
    p.finish(5)
    assert abs(p.pending_seconds() - 1.0) < 0.01
    y = drain(p, 1.2)
    assert p.played_samples(5) == 24000
    assert p.pending_seconds() == 0.0
    active = y[np.abs(y) > 1e-4]
    assert abs(len(active) - DEV) < DEV * 0.01
    assert dominant_frequency(y[:DEV], DEV) == pytest.approx(440.0, abs=1.0)


def test_partial_playback_is_reported_in_source_samples():
    p = Player(DEV)
    p.enqueue(tone(300.0, 2.0, 22050), 22050, tag=1)   # Piper's rate
    drain(p, 0.5)
    played = p.played_samples(1)
    assert abs(played - 0.5 * 22050) <= 2 * 22050 * 512 / DEV   # within one callback block


def test_flush_fades_out_quickly_drops_queue_and_reports():
    p = Player(DEV, fade_ms=8.0)
    x = np.full(3 * 24000, 0.5, dtype=np.float32)   # a constant: any hard cut would be a step
    p.enqueue(x, 24000, tag=2)
    p.fill(np.zeros(512, np.float32))                # the output stream is running
    head = drain(p, 0.25)
    report = {}

    def flusher():
        report["r"] = p.flush()

    th = threading.Thread(target=flusher)
    th.start()
    time.sleep(0.05)
    tail = drain(p, 0.1)                              # the callback that services the flush
    th.join(2)
    r = report["r"]
    assert r.requested_at > 0
    played = r.played_samples[2]
    assert played == p.played_samples(2)
    assert r.dropped_samples == len(x) - played
    # played = everything handed out before the flush plus the fade
    assert abs(played - (512 + len(head)) * 24000 / DEV - p.fade_samples * 24000 / DEV) <= 2
    nz = np.flatnonzero(np.abs(tail) > 1e-6)
    assert len(nz) <= p.fade_samples                  # silence within the fade (8 ms)
    steps = np.abs(np.diff(np.concatenate([head[-1:], tail])))
    assert steps.max() < 0.5 * 0.05                   # no click: the fade never jumps
    assert p.pending_seconds() == 0.0


def test_audio_of_a_flushed_turn_is_dropped_and_new_turns_play():
    p = Player(DEV)
    p.enqueue(np.ones(4800, np.float32) * 0.1, 24000, tag=1)
    r = p.flush()                                     # no stream running: immediate
    assert r.played_samples == {1: 0} and r.dropped_samples == 4800
    p.enqueue(np.ones(4800, np.float32) * 0.1, 24000, tag=1)   # a late speak step of the interrupted turn
    assert p.pending_seconds() == 0.0 and p.dropped_after_cancel == 4800
    p.enqueue(np.ones(2400, np.float32) * 0.1, 24000, tag=2)
    p.finish(2)
    drain(p, 0.2)
    assert p.played_samples(2) == 2400


def test_new_tag_finishes_the_previous_one_and_rates_may_differ():
    p = Player(DEV)
    p.enqueue(tone(200.0, 0.5, 24000), 24000, tag=1)
    p.enqueue(tone(200.0, 0.5, 22050), 22050, tag=2)
    p.finish(2)
    drain(p, 1.2)
    assert p.played_samples(1) == 12000
    assert p.played_samples(2) == 11025
    assert p.starved_blocks == 0


def test_a_new_device_rate_keeps_the_same_player_and_plays_at_that_rate():
    """The output device came back at another rate: what was queued is dropped, the object (the engine's sink)
    stays, and the next turn plays at the new rate with its fade sized for it."""
    p = Player(DEV, capacity_seconds=10.0, fade_ms=8.0)
    p.enqueue(tone(440.0, 2.0, 24000, amplitude=0.4), 24000, tag=1)
    drain(p, 0.2)
    p.set_device_rate(44100)
    assert p.device_rate == 44100 and p.pending_seconds() == 0.0 and p.played_samples(1) == 0
    assert p.fade_samples == round(0.008 * 44100) and p._ring.capacity == 10 * 44100
    p.enqueue(tone(440.0, 1.0, 24000, amplitude=0.4), 24000, tag=2)
    p.finish(2)
    assert abs(p.pending_seconds() - 1.0) < 0.01
    out, buf = [], np.zeros(441, dtype=np.float32)
    for _ in range(120):
        p.fill(buf)
        out.append(buf.copy())
    y = np.concatenate(out)
    assert p.played_samples(2) == 24000
    assert dominant_frequency(y[:44100], 44100) == pytest.approx(440.0, abs=1.0)
