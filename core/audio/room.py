"""Simulated echo paths for file mode: what a microphone in a room picks up while the assistant speaks.

An :class:`EchoRoom` turns two 16 kHz signals into the microphone signal, block by block::

    mic = user --(user path: direct + reverberation, or dry for a close-talking mic)--> +
          played --(output latency)--(loudspeaker soft clipping)--(room impulse response)--(echo gain)--> +
          room noise (low-passed, "fan" noise at a set SNR)

``played`` is the far-end reference: the samples the assistant's sink played over the same span (what the echo
canceller is given as its reference). The output latency is the part of the acoustic path that the reference does
not see (converter, driver and loudspeaker delay): the echo reaches the microphone ``latency_ms`` plus the
propagation time after the reference sample. The presets keep it steady; ``glitch_ms`` and ``glitches_per_min``
make it jump now and then, as underruns and catch-ups of a loaded machine's sound server do (the real PulseAudio
loop in CI showed the echo cancellers losing the echo for a moment after such jumps).

Room impulse responses come from pyroomacoustics' image-source model in a shoe-box room whose absorption is set for
the preset's RT60 (inverse Sabine, then one calibration step on the measured RT60 of the generated response). A seed
jitters the room's size and the positions (deterministic per seed); the noise generator is seeded too.

Levels. All figures assume the user's voice and the played audio at equal RMS at their sources:

* both paths' impulse responses are normalised to unit energy, so the user's voice keeps its level at the
  microphone and the echo arrives ``echo_db`` above (positive) or below it, whatever the room;
* room noise is set relative to :data:`NOMINAL_SPEECH_DBFS`, the level the scripted user speaks at
  (``core.harness`` normalises its utterances to it): noise RMS = ``NOMINAL_SPEECH_DBFS - snr_db``.

The microphone signal is clipped to [-1, 1] (a converter clips too). Everything carries across calls (latency line,
convolution tails, noise filter and generator), so any block sizes give the same signal as one call.

``parley bench rooms [--seconds S] [--seed N] [--far FILE.wav]`` (:mod:`core.compose.bench`) prints every preset's figures, the echo
return loss enhancement (ERLE) of the real AEC3 wrapper (:mod:`core.audio.aec`) on it and how much of the user's
voice AEC3 removes while both talk (``near_attenuation_db``), as JSON.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from core.constants import AEC_FRAME_SAMPLES_16K, MODEL_INPUT_RATE

NOMINAL_SPEECH_DBFS = -26.0   # RMS of the user's speech at the microphone (and of the scripted user's utterances)
SPEED_OF_SOUND = 343.0        # m/s
NOISE_CUTOFF_HZ = 400.0       # room noise: white noise through a one-pole low-pass (a fan, an air conditioner)
NOISE_BLOCK = 4096            # the noise generator draws in fixed blocks, so block sizes never change the noise
TAIL_DB = 60.0                # an impulse response is cut where its remaining energy is this far below the total


@dataclass(frozen=True)
class RoomPreset:
    """One simulated setting. ``echo_db`` None: no echo path at all; ``rt60_s`` 0: anechoic paths (direct sound
    only); ``user_mic_m`` None: a close-talking microphone (the user's voice arrives dry); ``snr_db`` None: no
    room noise; ``drive`` 0: a linear loudspeaker."""

    name: str
    description: str
    room_dim_m: tuple[float, float, float] = (4.0, 3.5, 2.6)
    rt60_s: float = 0.0
    speaker_mic_m: float = 0.1
    user_mic_m: float | None = None
    echo_db: float | None = None
    latency_ms: float = 0.0
    drive: float = 0.0
    snr_db: float | None = None
    glitch_ms: float = 0.0          # output glitches: the latency moves to latency_ms + [0, glitch_ms] ...
    glitches_per_min: float = 0.0   # ... this often on average (0: a steady latency)

    def __post_init__(self) -> None:
        if self.rt60_s < 0 or self.latency_ms < 0 or self.drive < 0 or self.speaker_mic_m <= 0:
            raise ValueError(f"room preset {self.name!r}: negative RT60, latency or drive, or no distance")
        if self.glitch_ms < 0 or self.glitches_per_min < 0:
            raise ValueError(f"room preset {self.name!r}: negative glitch length or rate")
        if self.user_mic_m is not None and self.user_mic_m <= 0:
            raise ValueError(f"room preset {self.name!r}: user_mic_m must be positive (or None for a close mic)")


PRESETS: dict[str, RoomPreset] = {p.name: p for p in (
    RoomPreset("none", "no echo, no noise: the input file as it is (the default)"),
    RoomPreset("headset", "a wired headset: the earcups leak a little of the answer into the boom microphone "
               "(no room reverberation on either path), a quiet room",
               rt60_s=0.0, speaker_mic_m=0.12, user_mic_m=None, echo_db=-30.0, latency_ms=20.0, drive=0.0,
               snr_db=45.0),
    RoomPreset("laptop", "a laptop on a desk in a small office: the speakers sit 10 cm from the microphones, the "
               "user 60 cm away, so the echo is LOUDER than the user; small speakers driven hard; a fan",
               room_dim_m=(4.0, 3.5, 2.6), rt60_s=0.35, speaker_mic_m=0.10, user_mic_m=0.6, echo_db=6.0,
               latency_ms=40.0, drive=1.5, snr_db=35.0),
    RoomPreset("speakerphone", "a speakerphone (or desktop speakers) on the table of a small meeting room: "
               "loudspeaker 30 cm from the microphone, the user 80 cm away, more reverberant than the office, "
               "air conditioning",
               room_dim_m=(5.0, 4.0, 2.8), rt60_s=0.45, speaker_mic_m=0.30, user_mic_m=0.8, echo_db=3.0,
               latency_ms=60.0, drive=0.8, snr_db=30.0),
)}


def get_preset(name: str | RoomPreset) -> RoomPreset:
    """A preset by name (clear error naming the choices), or the preset itself."""
    if isinstance(name, RoomPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown room {name!r} (choose from {', '.join(PRESETS)})") from None


# ----------------------------------------------------------------------------------------------------------------
# impulse responses


@dataclass(frozen=True)
class RoomGeometry:
    room_dim_m: tuple[float, float, float]
    mic: tuple[float, float, float]
    speaker: tuple[float, float, float]
    user: tuple[float, float, float] | None


def _geometry(p: RoomPreset, seed: int) -> RoomGeometry:
    """Room size jittered by up to 5 %, the microphone near the middle of a table, the loudspeaker and the user
    at their distances in seeded horizontal directions."""
    rng = np.random.default_rng([seed, 0x5EC40])
    dim = tuple(float(d * rng.uniform(0.95, 1.05)) for d in p.room_dim_m)
    mic = np.array([dim[0] * rng.uniform(0.4, 0.6), dim[1] * rng.uniform(0.4, 0.6), min(0.8, dim[2] / 2)])

    def at(distance: float, azimuth: float) -> tuple[float, float, float]:
        pos = mic + distance * np.array([math.cos(azimuth), math.sin(azimuth), 0.0])
        pos[2] += 0.05 if distance < 0.5 else 0.4     # a loudspeaker a little above the mic, a mouth higher up
        return tuple(float(v) for v in np.clip(pos, 0.2, np.array(dim) - 0.2))

    az = rng.uniform(0, 2 * math.pi)
    speaker = at(p.speaker_mic_m, az)
    user = at(p.user_mic_m, az + rng.uniform(0.5 * math.pi, 1.5 * math.pi)) if p.user_mic_m is not None else None
    return RoomGeometry(dim, tuple(float(v) for v in mic), speaker, user)


def _simulate(dim: tuple[float, ...], rt60: float, sources: list[tuple[float, ...]], mic: tuple[float, ...],
              rate: int) -> list[np.ndarray]:
    import pyroomacoustics as pra

    if rt60 > 0:
        absorption, max_order = pra.inverse_sabine(rt60, list(dim))
        room = pra.ShoeBox(list(dim), fs=rate, materials=pra.Material(absorption), max_order=max_order,
                           use_rand_ism=False, air_absorption=False)
    else:
        room = pra.ShoeBox(list(dim), fs=rate, max_order=0)
    for s in sources:
        room.add_source(list(s))
    room.add_microphone(list(mic))
    room.compute_rir()
    # pyroomacoustics centres each image's fractional-delay filter, which shifts every response by half the
    # filter's length: take that back so the direct sound arrives at distance / c.
    shift = pra.constants.get("frac_delay_length") // 2
    return [np.asarray(room.rir[0][i][shift:], dtype=np.float64) for i in range(len(sources))]


def measure_rt60(h: np.ndarray, rate: int = MODEL_INPUT_RATE) -> float:
    """RT60 of an impulse response from its Schroeder decay (T20 extrapolated to 60 dB), in seconds."""
    import pyroomacoustics as pra

    return float(pra.experimental.measure_rt60(np.asarray(h, dtype=np.float64), fs=rate, decay_db=20))


def _cut_tail(h: np.ndarray) -> np.ndarray:
    energy = np.cumsum(h[::-1] ** 2)[::-1]
    keep = np.flatnonzero(energy > energy[0] * 10 ** (-TAIL_DB / 10))
    return h[:keep[-1] + 1] if len(keep) else h


@functools.lru_cache(maxsize=16)
def _impulse_responses(p: RoomPreset, seed: int, rate: int) -> tuple[RoomGeometry, np.ndarray | None,
                                                                     np.ndarray | None]:
    """(geometry, echo path, user path), each path unit-energy (None: no echo / a dry user path)."""
    geo = _geometry(p, seed)
    sources = [geo.speaker] + ([geo.user] if geo.user is not None else [])
    rirs = _simulate(geo.room_dim_m, p.rt60_s, sources, geo.mic, rate)
    if p.rt60_s > 0:
        # The image-source model in a box with uniform absorption decays slower than Sabine's formula says:
        # one correction of the target by the measured ratio brings it within a few per cent.
        measured = measure_rt60(rirs[0], rate)
        if measured > 0:
            rirs = _simulate(geo.room_dim_m, p.rt60_s * p.rt60_s / measured, sources, geo.mic, rate)
    paths = [_cut_tail(h) for h in rirs]
    paths = [h / np.sqrt(np.sum(h ** 2)) for h in paths]
    echo = paths[0] if p.echo_db is not None else None
    user = paths[1] if geo.user is not None else None
    return geo, echo, user


# ----------------------------------------------------------------------------------------------------------------
# streaming parts


class _Delay:
    """The output latency: a delay line of ``samples``. With glitches, at random moments (a Poisson process of
    ``per_min`` a minute) the latency moves to ``samples`` plus 0 to ``glitch`` samples, as a loaded machine's sound
    server does: when it grows the output plays silence for the difference (an underrun) and then goes on where it
    was; when it shrinks the output skips the oldest queued samples (the server catching up). The reference (what
    was handed to the sink) sees neither, so the echo path jumps under the cancellers' feet."""

    def __init__(self, samples: int, glitch: int = 0, per_min: float = 0.0, seed: int = 0,
                 rate: int = MODEL_INPUT_RATE) -> None:
        self._base = samples
        self._buf = np.zeros(samples, dtype=np.float64)
        self._glitch = int(glitch)
        self._mean_gap = 60.0 * rate / per_min if per_min > 0 and glitch > 0 else None
        self._rng = np.random.default_rng([seed, 0x6117C4])
        self._pos = 0
        self._next = self._draw_next() if self._mean_gap is not None else None
        self.glitches = 0

    def _draw_next(self) -> int:
        assert self._mean_gap is not None
        return self._pos + 1 + int(self._rng.exponential(self._mean_gap))

    def _shift(self) -> None:
        target = self._base + int(self._rng.integers(0, self._glitch + 1))
        have = len(self._buf)
        if target > have:
            self._buf = np.concatenate([np.zeros(target - have), self._buf])
        else:
            self._buf = self._buf[have - target:]
        self.glitches += 1
        self._next = self._draw_next()

    def _run(self, x: np.ndarray) -> np.ndarray:
        self._pos += len(x)
        if len(self._buf) == 0:
            return x
        joined = np.concatenate([self._buf, x])
        self._buf = joined[len(x):]
        return joined[:len(x)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        parts = []
        while self._next is not None and self._pos + len(x) > self._next:
            k = self._next - self._pos
            parts.append(self._run(x[:k]))
            x = x[k:]
            self._shift()
        parts.append(self._run(x))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _Convolver:
    """Overlap-add FIR filter for any block sizes (the tail of each block's convolution waits for the next)."""

    def __init__(self, h: np.ndarray) -> None:
        from scipy.signal import oaconvolve

        self.h = h
        self._convolve = oaconvolve
        self._tail = np.zeros(len(h) - 1, dtype=np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n = len(x)
        y = self._convolve(x, self.h) if len(self.h) > 1 else x * self.h[0]
        m = len(self._tail)
        if m:
            if len(y) < m:
                y = np.concatenate([y, np.zeros(m - len(y))])
            y[:m] += self._tail
        out = y[:n].copy()
        rest = y[n:]
        tail = np.zeros(m)
        tail[:len(rest)] = rest[:m]
        self._tail = tail
        return out


class _RoomNoise:
    """Seeded white noise (drawn in fixed blocks) through a one-pole low-pass, at ``rms``."""

    def __init__(self, rms: float, seed: int, rate: int) -> None:
        from scipy.signal import lfilter

        self._lfilter = lfilter
        self._rng = np.random.default_rng([seed, 0x401CE])
        self._a = math.exp(-2 * math.pi * NOISE_CUTOFF_HZ / rate)
        # a one-pole low-pass (1 - a) / (1 - a z^-1) passes (1 - a) / (1 + a) of white noise's power
        self._gain = rms / math.sqrt((1 - self._a) / (1 + self._a))
        self._zi = np.zeros(1)
        self._pending = np.zeros(0)

    def __call__(self, n: int) -> np.ndarray:
        while len(self._pending) < n:
            self._pending = np.concatenate([self._pending, self._rng.standard_normal(NOISE_BLOCK)])
        white, self._pending = self._pending[:n], self._pending[n:]
        y, self._zi = self._lfilter([1 - self._a], [1, -self._a], white, zi=self._zi)
        return self._gain * y


def soft_clip(x: np.ndarray, drive: float) -> np.ndarray:
    """The loudspeaker's nonlinearity: ``tanh(drive x) / drive`` (unit gain for small signals; 0: linear)."""
    if drive <= 0:
        return x
    return np.tanh(drive * x) / drive


def thd_percent(drive: float, level_dbfs: float = -6.0, rate: int = MODEL_INPUT_RATE) -> float:
    """Total harmonic distortion of :func:`soft_clip` for a 1 kHz sine at ``level_dbfs`` peak, in per cent."""
    n = rate                              # one second: 1 kHz falls on a bin, so no window is needed
    t = np.arange(n) / rate
    y = soft_clip(10 ** (level_dbfs / 20) * np.sin(2 * np.pi * 1000 * t), drive)
    spec = np.abs(np.fft.rfft(y))
    fundamental = spec[1000]
    harmonics = spec[2000::1000]
    return float(100 * np.sqrt(np.sum(harmonics ** 2)) / fundamental)


class EchoRoom:
    """The microphone of a simulated room (see the module docstring). 16 kHz float32 in and out, any block sizes."""

    def __init__(self, preset: str | RoomPreset, seed: int = 0, rate: int = MODEL_INPUT_RATE) -> None:
        p = get_preset(preset)
        self.preset = p
        self.seed = int(seed)
        self.rate = int(rate)
        self.samples = 0
        self.geometry: RoomGeometry | None = None
        self._echo_h = self._user_h = None
        if p.echo_db is not None or p.user_mic_m is not None:
            self.geometry, self._echo_h, self._user_h = _impulse_responses(p, self.seed, self.rate)
        self._echo_gain = 10 ** (p.echo_db / 20) if p.echo_db is not None else 0.0
        self._latency = _Delay(int(round(p.latency_ms * self.rate / 1000)),
                               glitch=int(round(p.glitch_ms * self.rate / 1000)), per_min=p.glitches_per_min,
                               seed=self.seed, rate=self.rate)
        self._echo = _Convolver(self._echo_h) if self._echo_h is not None else None
        self._user = _Convolver(self._user_h) if self._user_h is not None else None
        self._noise = (_RoomNoise(10 ** ((NOMINAL_SPEECH_DBFS - p.snr_db) / 20), self.seed, self.rate)
                       if p.snr_db is not None else None)

    @property
    def has_echo(self) -> bool:
        return self._echo is not None

    def mic(self, user: np.ndarray, played: np.ndarray) -> np.ndarray:
        """The microphone signal for the next ``len(user)`` samples: the user's voice (through its own path) + the
        echo of ``played`` (the far-end reference over the same span, same length) + room noise."""
        user = np.asarray(user, dtype=np.float64).reshape(-1)
        played = np.asarray(played, dtype=np.float64).reshape(-1)
        if len(played) != len(user):
            raise ValueError(f"EchoRoom.mic: played has {len(played)} samples for {len(user)} user samples")
        if len(user) == 0:
            return np.zeros(0, np.float32)
        out = self._user(user) if self._user is not None else user.copy()
        if self._echo is not None:
            out += self._echo_gain * self._echo(soft_clip(self._latency(played), self.preset.drive))
        if self._noise is not None:
            out += self._noise(len(user))
        self.samples += len(user)
        return np.clip(out, -1.0, 1.0).astype(np.float32)

    def echo_delay_ms(self) -> float:
        """Output latency plus the direct sound's propagation time: where the echo starts after the reference."""
        if self.geometry is None or self._echo_h is None:
            return float(self.preset.latency_ms)
        d = float(np.linalg.norm(np.subtract(self.geometry.speaker, self.geometry.mic)))
        return self.preset.latency_ms + 1000 * d / SPEED_OF_SOUND

    def describe(self) -> dict:
        """The preset's figures for this seed (for the docs and reports): targets and what the generated paths
        measure."""
        p = self.preset
        d = asdict(p)
        d["room_dim_m"] = ([round(v, 2) for v in self.geometry.room_dim_m]
                           if self.geometry is not None and p.rt60_s > 0 else None)   # None: anechoic paths
        d.update(seed=self.seed, rate=self.rate, nominal_speech_dbfs=NOMINAL_SPEECH_DBFS,
                 noise_dbfs=round(NOMINAL_SPEECH_DBFS - p.snr_db, 1) if p.snr_db is not None else None,
                 echo_delay_ms=round(self.echo_delay_ms(), 2) if self.has_echo else None,
                 thd_percent_at_minus6dbfs=round(thd_percent(p.drive), 2))
        for key, h in (("echo", self._echo_h), ("user", self._user_h)):
            d[f"{key}_path_ms"] = round(1000 * len(h) / self.rate, 1) if h is not None else None
            d[f"{key}_rt60_measured_s"] = (round(measure_rt60(h, self.rate), 3)
                                           if h is not None and p.rt60_s > 0 else None)
        return d


def with_changes(p: str | RoomPreset, **changes) -> RoomPreset:
    """A preset with some figures changed (e.g. ``snr_db=None`` to measure without noise)."""
    return replace(get_preset(p), **changes)


# ----------------------------------------------------------------------------------------------------------------
# echo cancellation check


def erle_db(room: EchoRoom, far: np.ndarray, skip_s: float = 2.0) -> dict:
    """Run the real AEC3 wrapper on ``room.mic(zeros, far)`` with ``far`` as its reference (10 ms frames) and
    measure the echo return loss enhancement: mic power / cleaned power over the frames after ``skip_s``
    (convergence) where the far end is active. Also gives the same figure over the first ``skip_s``."""
    from core.audio.aec import EchoCanceller

    f = AEC_FRAME_SAMPLES_16K
    far = np.asarray(far, dtype=np.float32)
    n = (len(far) // f) * f
    far = far[:n]
    mic = room.mic(np.zeros(n, np.float32), far)
    clean = EchoCanceller().process_block(mic, far)
    frames_mic = mic[:len(clean)].reshape(-1, f).astype(np.float64)
    frames_out = clean.reshape(-1, f).astype(np.float64)
    frames_far = far[:len(clean)].reshape(-1, f).astype(np.float64)
    far_pow = np.mean(frames_far ** 2, axis=1)
    active = far_pow > 10 ** (-50 / 10)
    skip = int(skip_s * room.rate / f)

    def ratio(sel: np.ndarray) -> float | None:
        if not sel.any():
            return None
        p_in = np.mean(frames_mic[sel] ** 2)
        p_out = np.mean(frames_out[sel] ** 2) + 1e-20
        return round(float(10 * np.log10(p_in / p_out)), 2)

    idx = np.arange(len(active))
    return {"erle_db": ratio(active & (idx >= skip)), "erle_first_db": ratio(active & (idx < skip)),
            "echo_dbfs": round(float(10 * np.log10(np.mean(frames_mic[active] ** 2) + 1e-20)), 1),
            "residual_dbfs": round(float(10 * np.log10(np.mean(frames_out[active & (idx >= skip)] ** 2)
                                                       + 1e-20)), 1),
            "far_dbfs": round(float(10 * np.log10(np.mean(far_pow[active]) + 1e-20)), 1),
            "seconds": round(n / room.rate, 2)}


def double_talk_db(preset: str | RoomPreset, far: np.ndarray, near: np.ndarray, seed: int = 0,
                   near_at_s: float = 3.0) -> dict:
    """How much of the user's voice survives AEC3 while the assistant speaks: ``near`` (the user's speech, at the
    nominal level) starts at ``near_at_s`` over ``far``; the user's voice alone at the microphone (the same room
    without the far end) is compared with AEC3's output over the frames where both talk.
    ``near_attenuation_db`` > 0: the canceller's suppressor took that much of the user's voice away."""
    from core.audio.aec import EchoCanceller

    f = AEC_FRAME_SAMPLES_16K
    far = np.asarray(far, dtype=np.float32)
    n = (len(far) // f) * f
    far = far[:n]
    user = np.zeros(n, np.float32)
    i = int(near_at_s * MODEL_INPUT_RATE)
    m = max(0, min(len(near), n - i))
    user[i:i + m] = near[:m]
    mic = EchoRoom(preset, seed).mic(user, far)
    alone = EchoRoom(preset, seed).mic(user, np.zeros(n, np.float32)).astype(np.float64)
    out = EchoCanceller().process_block(mic, far).astype(np.float64)
    frames = lambda x: x[:len(out)].reshape(-1, f)   # noqa: E731
    p_alone = np.mean(frames(alone) ** 2, axis=1)
    p_far = np.mean(frames(far.astype(np.float64)) ** 2, axis=1)
    both = (p_alone > 10 ** ((NOMINAL_SPEECH_DBFS - 15) / 10)) & (p_far > 10 ** (-50 / 10))
    if not both.any():
        return {"near_attenuation_db": None, "double_talk_s": 0.0}
    p_out = np.mean(frames(out) ** 2, axis=1)
    return {"near_attenuation_db": round(float(10 * np.log10(p_alone[both].sum() / (p_out[both].sum() + 1e-20))), 1),
            "double_talk_s": round(float(both.sum() * f / MODEL_INPUT_RATE), 2)}
