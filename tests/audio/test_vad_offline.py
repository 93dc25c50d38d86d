"""EchoAwareVad on espeak-ng speech files, no audio device: onsets/offsets, streaming invariance, pre-roll, echo
gating and double talk with synthetic echo."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.audio.interfaces import VadEvent
from core.audio.vad import EchoAwareVad, SileroOnnx, VadConfig, VadDecision, silero_model_path

RATE = 16000


def run(vad, cleaned, speaking=False, reference=None, raw=None, step=160):
    events = []
    for i in range(0, len(cleaned), step):
        ref = None if reference is None else reference[i:i + step]
        r = None if raw is None else raw[i:i + step]
        events += vad.process(cleaned[i:i + step], speaking, ref, raw_16k=r)
    return events


@pytest.fixture(scope="module")
def model():
    return SileroOnnx()


@pytest.fixture(scope="module")
def sentences(espeak):
    a, _ = espeak("Please turn on the lights in the kitchen and the hallway.", voice="en-us+m3", rate=RATE)
    b, _ = espeak("What time is it in Tokyo right now?", voice="en-us+f3", rate=RATE)
    return a, b


def test_model_loads_from_the_wheel_without_importing_torch_side_effects(model):
    assert silero_model_path().endswith("silero_vad.onnx")
    p = model(np.zeros(512, dtype=np.float32))
    assert 0.0 <= p < 0.1


def active_span(x, fraction=0.05):
    idx = np.flatnonzero(np.abs(x) > fraction * np.abs(x).max())
    return int(idx[0]), int(idx[-1]) + 1


def test_onsets_and_offsets_follow_speech(model, sentences):
    a, b = sentences
    gap = np.zeros(int(1.5 * RATE), dtype=np.float32)
    sig = np.concatenate([np.zeros(RATE, np.float32), a, gap, b, np.zeros(RATE, np.float32)])
    (a0, a1), (b0, b1) = active_span(a), active_span(b)
    off_b = RATE + len(a) + len(gap)
    starts = [RATE + a0, off_b + b0]
    ends = [RATE + a1, off_b + b1]
    vad = EchoAwareVad(model=model)
    events = run(vad, sig)
    onsets = [e for e in events if e.kind == "onset"]
    offsets = [e for e in events if e.kind == "offset"]
    assert len(onsets) == 2 and len(offsets) == 2, events
    for e, s in zip(onsets, starts):
        assert isinstance(e, VadEvent) and isinstance(e, VadDecision)
        assert s - 0.05 * RATE <= e.sample <= s + 0.25 * RATE
        assert e.detected_at >= e.sample + 3 * 512 - 1   # min_speech_ms = 96 ms = 3 windows
    for e, end in zip(offsets, ends):
        assert end - 0.3 * RATE <= e.sample <= end + 0.3 * RATE
        assert e.detected_at - e.sample >= 0.4 * RATE - 512   # min_silence_ms
    assert vad.position == (len(sig) // 512) * 512


def test_silence_and_noise_never_open_a_turn(model):
    rng = np.random.default_rng(1)
    sig = np.concatenate([np.zeros(2 * RATE, np.float32),
                          (rng.standard_normal(3 * RATE) * 0.003).astype(np.float32)])   # about -50 dBFS
    vad = EchoAwareVad(model=model)
    assert run(vad, sig) == []
    assert vad.probability < 0.5


def test_events_do_not_depend_on_how_the_stream_is_cut(model, sentences):
    a, b = sentences
    sig = np.concatenate([np.zeros(8000, np.float32), a, np.zeros(RATE, np.float32), b, np.zeros(RATE, np.float32)])
    ref = [(e.kind, e.sample) for e in run(EchoAwareVad(model=model), sig, step=512)]
    rng = np.random.default_rng(2)
    vad = EchoAwareVad(model=model)
    got, i = [], 0
    while i < len(sig):
        n = int(rng.integers(1, 3000))
        got += [(e.kind, e.sample) for e in vad.process(sig[i:i + n], False)]
        i += n
    assert got == ref and len(ref) == 4


def test_the_capture_chain_gives_every_chunk_its_probabilities_however_long_the_block(sentences):
    """The VAD keeps its latest 512 window probabilities (16 s) until the chain collects them: a 24 s block in one
    ``process`` call lost the first ones (a test helper that fed whole files saw a question with none and never
    answered it). The chain takes long blocks in pieces; the chunks are the same as when fed 160 ms at a time."""
    from core.engine.filemode import file_chain

    a, b = sentences
    sig = np.concatenate([np.zeros(8000, np.float32), a, np.zeros(20 * RATE, np.float32), b,
                          np.zeros(RATE, np.float32)])
    sig = np.pad(sig, (0, -len(sig) % 2560))

    def probs(step: int) -> np.ndarray:
        chain, out = file_chain(None), []
        chain.on_chunk = out.append
        for i in range(0, len(sig), step):
            chain.process(sig[i:i + step], np.zeros(min(step, len(sig) - i), np.float32))
        return np.stack([c.vad_probs for c in out])

    whole, streamed = probs(len(sig)), probs(2560)
    assert len(sig) > 16 * RATE and streamed[:40].max() > 0.9            # the first sentence is in the first chunks
    np.testing.assert_allclose(whole, streamed, atol=1e-6)


def test_pre_roll_is_the_audio_before_the_onset(model, sentences):
    a, _ = sentences
    noise = (np.random.default_rng(3).standard_normal(RATE) * 1e-3).astype(np.float32)
    sig = np.concatenate([noise, a])
    vad = EchoAwareVad(VadConfig(pre_roll_ms=500), model=model)
    onset = None
    for i in range(0, len(sig), 160):   # the engine asks for the pre-roll when the onset arrives
        onset = next((e for e in vad.process(sig[i:i + 160], False) if e.kind == "onset"), None)
        if onset is not None:
            break
    assert onset is not None
    pre = vad.pre_roll()
    assert len(pre) == 8000
    np.testing.assert_array_equal(pre, sig[onset.sample - 8000:onset.sample])
    assert len(vad.history(onset.sample, onset.sample + 1024)) == 1024


def test_residual_echo_does_not_open_a_turn_while_the_assistant_speaks(model, sentences):
    a, b = sentences
    far = np.concatenate([a, b, a]) * 0.8
    # an echo canceller that has not converged yet: the echo is only 14 dB down, 60 ms late
    d = int(0.06 * RATE)
    residual = np.zeros_like(far)
    residual[d:] = 0.2 * far[:-d]
    gated = EchoAwareVad(model=model)
    assert [e for e in run(gated, residual, True, far) if e.kind == "onset"] == []
    assert gated.echo_rejected_windows > 10
    # the same signal without the reference would open turns: the echo check is what stops it
    blind = EchoAwareVad(model=model)
    assert [e for e in run(blind, residual, True, None) if e.kind == "onset"]


def test_return_ratio_check_uses_the_raw_microphone(model, sentences):
    a, _ = sentences
    raw = a * 0.5
    cleaned = raw * 0.02   # 34 dB under the microphone: what a converged canceller leaves of its echo
    cfg = VadConfig(echo_similarity_max=1.1)  # similarity check off: the ratio alone must gate
    zeros = np.zeros_like(raw)
    vad = EchoAwareVad(cfg, model=model)
    assert [e for e in run(vad, cleaned, True, zeros, raw) if e.kind == "onset"] == []
    assert vad.echo_rejected_windows > 10
    # without the raw microphone the same cleaned signal is taken for speech
    blind = EchoAwareVad(cfg, model=model)
    assert [e for e in run(blind, cleaned, True, zeros, None) if e.kind == "onset"]


def test_double_talk_is_detected_through_residual_echo(model, sentences, espeak):
    a, b = sentences
    far = np.concatenate([a, a, a]) * 0.8
    d = int(0.05 * RATE)
    residual = np.zeros_like(far)
    residual[d:] = 0.02 * far[:-d]     # converged canceller, about -34 dB
    user, _ = espeak("Hold on, I want to ask something else.", voice="en-us+f3", rate=RATE)
    at = 2 * RATE
    mic = residual.copy()
    mic[at:at + len(user)] += 0.5 * user
    voice_start = at + int(np.flatnonzero(np.abs(user) > 0.05 * np.abs(user).max())[0])
    vad = EchoAwareVad(model=model)
    onsets = [e for e in run(vad, mic, True, far) if e.kind == "onset"]
    assert onsets, "double talk not detected"
    detect_ms = (onsets[0].detected_at - voice_start) / RATE * 1000
    print(f"\n[vad offline] double-talk detect {detect_ms:.0f} ms, similarity {onsets[0].echo_similarity:.2f}")
    assert 0 < detect_ms < 300
    assert onsets[0].echo_similarity < vad.config.echo_similarity_max


def test_reset_starts_a_new_stream(model, sentences):
    a, _ = sentences
    vad = EchoAwareVad(model=model)
    run(vad, a)
    assert vad.position > 0
    vad.reset()
    assert vad.position == 0 and not vad.in_speech and vad.probability == 0.0
    assert len(vad.pre_roll()) == 0


def _with_dips(x: np.ndarray, every: int, width: int, first: int) -> np.ndarray:
    """``x`` with ``width`` of every ``every`` VAD windows (512 samples) silenced, from window ``first`` on."""
    y = x.copy()
    w = 512
    for k in range(first, len(x) // w, every):
        y[k * w:(k + width) * w] = 0.0
    return y


def test_one_dip_inside_a_barge_in_neither_counts_nor_breaks_the_run(model, espeak):
    """Over the echo the user's voice dips for a window (a softer sound, a window the near-end path refuses): one
    such window inside a run while the assistant speaks does not restart the run; two in a row do, and a run
    that dips again is over."""
    user, _ = espeak("Wait, what is the capital of Japan?", voice="en-gb", rate=RATE)
    user = np.concatenate([np.zeros(RATE, np.float32), 0.5 * user, np.zeros(RATE // 2, np.float32)])
    first = (RATE + int(np.flatnonzero(np.abs(user[RATE:]) > 0.05 * np.abs(user).max())[0])) // 512
    speech = user.copy()
    dipped = _with_dips(user, every=4, width=1, first=first + 2)     # at most 3 windows in a row are voiced
    dips = VadConfig()                           # the rule is on by default (see core/audio/vad.py)
    assert dips.speaking_dip_prob == 0.0
    for sig in (speech, dipped):
        onsets = [e for e in run(EchoAwareVad(dips, model=model), sig, True) if e.kind == "onset"]
        assert onsets and (onsets[0].detected_at - first * 512) / RATE < 0.5, onsets
    strict = EchoAwareVad(VadConfig(speaking_dip_prob=None), model=model)
    assert [e for e in run(strict, dipped, True) if e.kind == "onset"] == []    # each dip restarts the run
    # two windows in a row, or a second dip, end a run: silence every other window never makes an onset
    for every, width in ((4, 2), (2, 1)):
        gappy = _with_dips(user, every=every, width=width, first=first + 1)
        assert [e for e in run(EchoAwareVad(dips, model=model), gappy, True) if e.kind == "onset"] == [], (every, width)
    # with the assistant silent the rule does not apply: no run there tolerates a dip
    quiet = EchoAwareVad(VadConfig(min_speech_ms=128.0, speaking_dip_prob=0.0), model=model)
    assert [e for e in run(quiet, dipped, False) if e.kind == "onset"] == []


def test_a_user_who_dominates_both_cancellers_is_heard_even_when_the_reference_looks_alike(model, espeak):
    """The near-end path refuses a window whose linear-canceller output follows the reference (an echo path that
    moved). When the user dominates both outputs (the linear one far above its echo floor, AEC3 letting much
    through, as in real double talk) while the linear canceller still removes echo (its output under the
    microphone), a match is a chance likeness of two voices, and it does not veto. Here the user says the very
    words the assistant says, in step with its echo: the extreme case, so the cap on the likeness the rule
    overrules (``near_end_dominant_max_similarity``) is lifted to show the rest of the rule."""
    far, _ = espeak("The capital of France is Paris, a city on the river Seine.", voice="en-us", rate=RATE)
    far = np.concatenate([far, far, far]).astype(np.float32) * 0.5
    d = int(0.05 * RATE)
    echo = np.zeros_like(far)
    echo[d:] = far[:-d]
    at = 2 * len(far) // 3                       # the user joins in for the last third, on the same words
    user = np.zeros_like(far)
    user[at:] = 1.5 * echo[at:]
    raw = echo + user
    near = 0.03 * echo + user                    # the linear canceller: ~30 dB under the echo, the user whole
    clean = 0.002 * echo + 0.5 * user            # AEC3: the echo gone, much of the user through

    def onsets(cfg, clean=clean, raw=raw, near=near, excess=None):
        vad = EchoAwareVad(cfg, model=model)
        events = []
        for i in range(0, len(far), 160):
            s = slice(i, i + 160)
            events += vad.process(clean[s], True, far[s], raw_16k=raw[s], near_16k=near[s],
                                  near_excess_16k=None if excess is None else excess[s])
        return [e for e in events if e.kind == "onset"]

    any_likeness = VadConfig(near_end_dominant_max_similarity=None)
    heard = onsets(any_likeness)
    assert heard and heard[0].sample >= at - 512, heard
    by_default = onsets(VadConfig())             # the default cap on the likeness: heard where it dips under
    assert by_default and by_default[0].sample >= at - 512, by_default
    assert onsets(VadConfig(near_end_dominant_db=None)) == []      # without the rule, any likeness vetoes
    # echo alone, however loud the linear residual gets, is never dominant: AEC3 removes it
    loud = 0.3 * echo
    assert onsets(any_likeness, clean=0.002 * echo, raw=echo, near=loud) == []
    # an echo path that moved: both cancellers lose the echo at once, the linear one no longer removes anything
    # (its output as loud as the microphone) and AEC3 lets the echo through; the same likeness, no user
    lost = np.concatenate([echo[:at], 1.6 * echo[at:]])
    moved = onsets(any_likeness, clean=np.concatenate([0.002 * echo[:at], 0.8 * echo[at:]]), raw=lost,
                   near=np.concatenate([0.03 * echo[:at], lost[at:]]))
    assert moved == []
    lifted = replace(any_likeness, near_end_dominant_max_ratio_db=None)
    assert onsets(lifted, clean=np.concatenate([0.002 * echo[:at], 0.8 * echo[at:]]), raw=lost,
                  near=np.concatenate([0.03 * echo[:at], lost[at:]])) != []   # what the ratio condition stops
    # a path that moved while the canceller's output still happens to sit under the microphone (here 2 dB): the
    # frames where its wrong estimate, subtracted, made the microphone three times louder give it away
    # (``near_end_dominant_max_excess``); a user over a right estimate makes a frame at most a little louder
    under = np.concatenate([0.03 * echo[:at], 0.8 * lost[at:]])
    moved_clean = np.concatenate([0.002 * echo[:at], 0.8 * echo[at:]])
    wrong = np.concatenate([np.full(at, 0.5, np.float32), np.full(len(far) - at, 3.0, np.float32)])
    assert onsets(any_likeness, clean=moved_clean, raw=lost, near=under, excess=wrong) == []
    assert onsets(any_likeness, clean=moved_clean, raw=lost, near=under, excess=np.minimum(wrong, 1.1)) != []
    assert onsets(any_likeness, excess=np.full(len(far), 1.2, np.float32)) == heard     # the user, as before
