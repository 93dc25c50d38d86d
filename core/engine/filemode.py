"""File-driven conversations: a WAV in, what the assistant played (on the input's timeline) out, events as JSONL.

The input goes through the same capture chain as a microphone (:class:`~core.audio.chain.CaptureChain`: echo
cancellation against what the assistant played, the one echo-aware VAD, 160 ms chunks) and the engine runs its one
loop (:meth:`~core.engine.engine.Engine.run`) on those chunks, exactly as in the app. With a simulated room
(``room``, see :mod:`core.audio.room`) the assistant's playback comes back into the "microphone" through an output
latency, a room impulse response, a loudspeaker nonlinearity and room noise, so barge-in and backchannels are
tested over the assistant's own echo. Without one (``none``) the input is heard as through a headset: no echo, and
the echo canceller is off.

Fast mode (default): a :class:`~core.engine.clock.VirtualClock` advances 160 ms per input chunk and a
:class:`~core.engine.sink.VirtualAudioSink` plays the reply at its real rate on that clock, so turns, interruptions
and what was heard come out as in real time while compute time is not waited for (it is reported in the events'
``compute_ms`` fields). Realtime mode paces the same loop with the wall clock.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from core.audio.aec import AecConfig
from core.audio.chain import CaptureChain, ChainConfig
from core.audio.interfaces import AudioChunk
from core.audio.resample import StreamResampler
from core.audio.vad import VadConfig
from core.audio.ready_sound import DURATION_S as READY_SOUND_S, play_ready_sound
from core.audio.wavin import load_mono
from core.constants import CHUNK_SAMPLES_16K, CHUNK_SECONDS, MODEL_INPUT_RATE
from core.engine.backend import Backend
from core.errors import UserError, first_line
from core.engine.clock import VirtualClock, WallClock
from core.engine.config import EngineConfig
from core.engine.engine import ChunkSource, Engine
from core.engine.events import Event, EventBus, Interruption, JsonlWriter, Latency
from core.engine.sink import VirtualAudioSink

log = logging.getLogger(__name__)

MAX_STEPS_PER_CHUNK = 10_000   # a reply iterator that never yields audio cannot spin a fast-mode run forever
REFERENCE_LOOKAHEAD_S = 0.02   # a chunk is handed over this long after its end: the played reference is complete
SUB_BLOCK_SAMPLES_16K = 320    # the chain gets a chunk in pieces of 20 ms, as from a sound card's callbacks


def load_wav_16k(path: str | Path) -> np.ndarray:
    """Any audio file (any rate, any channel count) as 16 kHz mono float32, validated (``core.audio.wavin``: one
    line for a damaged or hand-made file; channels averaged unless they cancel out; soxr resampling)."""
    return load_mono(path, MODEL_INPUT_RATE, what="input file")


class WavWriter:
    """Streams float32 blocks into a 16-bit WAV file (memory stays flat however long the session)."""

    def __init__(self, path: str | Path, rate: int) -> None:
        import soundfile as sf

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self.rate = rate
        self.samples = 0
        self._file = sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16")

    def write(self, block: np.ndarray) -> None:
        try:
            self._file.write(np.clip(block, -1.0, 1.0))
        except (OSError, RuntimeError) as exc:   # soundfile's LibsndfileError ("System error."): a full disk...
            raise UserError(f"writing {self.path} failed ({first_line(exc)}): is the disk full?") from None
        self.samples += len(block)

    def close(self) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except (OSError, RuntimeError) as exc:
                raise UserError(f"finishing {self.path} failed ({first_line(exc)}): is the disk full?") from None


# ---------------------------------------------------------------------------------------------------------------
# what the simulated microphone hears


# A session that begins with the ready sound: the user's input starts this long after it began: the sound (1.0 s)
# and a quarter second for its echo to die away (a user answers a "ready" cue about this fast), rounded up to whole
# 160 ms chunks, so that the input is cut into the same chunks as without the sound (Whisper tiny's transcript of a
# sentence can change with where the chunks fall).
READY_LEAD_S = math.ceil((READY_SOUND_S + 0.25) / CHUNK_SECONDS) * CHUNK_SECONDS


def input_offset_s(ready_sound: bool) -> float:
    """Session time at which a file-driven run's input begins (``run_conversation(ready_sound=...)``)."""
    return READY_LEAD_S if ready_sound else 0.0


class UserInput(Protocol):
    """The user's side of a file-driven conversation, block by block at 16 kHz."""

    def block(self, start: int, n: int) -> np.ndarray:
        """The user's audio for input samples ``[start, start + n)`` (zeros where the user is silent)."""

    def ended(self, position: int) -> bool:
        """Nothing more will be said from ``position`` on (the input is over)."""

    def assistant_audible(self, t: float, audible: bool) -> None:
        """Told before every block whether the assistant was audible up to session time ``t``."""


class WavUser:
    """A recorded input: the user says exactly what the file holds."""

    def __init__(self, audio_16k: np.ndarray) -> None:
        self.audio = np.ascontiguousarray(audio_16k, dtype=np.float32).reshape(-1)

    def block(self, start: int, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        part = self.audio[start:start + n]
        out[:len(part)] = part
        return out

    def ended(self, position: int) -> bool:
        return position >= len(self.audio)

    def assistant_audible(self, t: float, audible: bool) -> None:
        pass


class DelayedUser:
    """``user`` starting ``delay`` samples into the session (silence before): the user of a session that begins
    with the ready sound speaks on their own timeline from the moment Parley is ready."""

    def __init__(self, user: UserInput, delay: int) -> None:
        self.user = user
        self.delay = int(delay)

    def block(self, start: int, n: int) -> np.ndarray:
        s = start - self.delay
        if s >= 0:
            return self.user.block(s, n)
        out = np.zeros(n, dtype=np.float32)
        if s + n > 0:
            out[-s:] = self.user.block(0, s + n)
        return out

    def ended(self, position: int) -> bool:
        return position >= self.delay and self.user.ended(position - self.delay)

    def assistant_audible(self, t: float, audible: bool) -> None:
        t -= self.delay / MODEL_INPUT_RATE
        if t >= 0:
            self.user.assistant_audible(t, audible)


class Room(Protocol):
    """An acoustic path from the assistant's loudspeaker to the microphone (``core.audio.room.EchoRoom``)."""

    def mic(self, user: np.ndarray, played: np.ndarray) -> np.ndarray:
        """The microphone signal for the next ``len(user)`` samples, given what the sink played over them."""


class PlayedReference:
    """Everything the virtual sink played, at 16 kHz and addressed by session time (the canceller's reference)."""

    def __init__(self, sink_rate: int) -> None:
        self._resampler = StreamResampler(sink_rate, MODEL_INPUT_RATE)
        self._buf = np.zeros(0, dtype=np.float32)
        self._base = 0           # 16 kHz position of _buf[0]

    def __call__(self, block: np.ndarray) -> None:
        y = self._resampler.process(block)
        if len(y):
            self._buf = np.concatenate([self._buf, y])

    def take(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)``; older samples are forgotten. Missing ones (not yet played) are zeros."""
        out = np.zeros(n, dtype=np.float32)
        a = start - self._base
        part = self._buf[max(a, 0):a + n] if a + n > 0 else self._buf[:0]
        out[max(-a, 0):max(-a, 0) + len(part)] = part
        drop = max(0, min(len(self._buf), start + n - self._base))
        self._buf = self._buf[drop:]
        self._base += drop
        return out


class FileSource(ChunkSource):
    """Chunks of a file-driven conversation for :meth:`Engine.run`.

    Each 20 ms (:data:`SUB_BLOCK_SAMPLES_16K`) the user's audio (``user``) is mixed with the room's echo of what the
    sink played over the same span (``room``; None: no echo), and the mix goes through the capture chain with that
    played audio as the canceller's reference; every 160 ms the chain hands over a chunk. On the virtual clock, :meth:`read` moves time on only when the engine has nothing else
    to do (compute time is not on the clock); on the wall clock it waits for the chunk's capture time. After the
    input ends it raises :class:`EOFError` once, then keeps time running with silence (the answer plays out) until
    ``drain_limit_s``, then raises again.
    """

    def __init__(self, user: UserInput, clock: VirtualClock | WallClock, sink: VirtualAudioSink, *,
                 chain: CaptureChain, room: Room | None = None, realtime: bool = False,
                 drain_limit_s: float = 120.0, on_chunk: Callable[[AudioChunk], None] | None = None) -> None:
        self.user = user
        self.clock = clock
        self.sink = sink
        self.room = room
        self.realtime = realtime
        self.chain = chain
        self.on_chunk = on_chunk
        self.reference = PlayedReference(sink.rate)
        sink.add_tap(self.reference)
        self._pending: list[AudioChunk] = []
        chain.on_chunk = self._pending.append
        self.k = 0                       # chunks delivered
        self._ended_at: int | None = None
        self._drain_chunks = math.ceil(drain_limit_s / CHUNK_SECONDS)
        self._eof_raised = 0
        self._idle_reads = 0

    def restart_vad(self) -> None:
        self.chain.restart_vad()

    def read(self, timeout: float) -> AudioChunk | None:
        if self._ended_at is None and self.user.ended(self.k * CHUNK_SAMPLES_16K):
            self._ended_at = self.k
        if self._ended_at is not None:
            if self._eof_raised == 0 or (self._eof_raised == 1 and self.k >= self._ended_at + self._drain_chunks):
                self._eof_raised += 1
                raise EOFError
        due = (self.k + 1) * CHUNK_SECONDS + REFERENCE_LOOKAHEAD_S
        if self.realtime:
            if self.clock.now() < due:
                if timeout <= 0:
                    return None
                self.clock.sleep_until(min(due, self.clock.now() + timeout))
                if self.clock.now() < due:
                    return None
        elif timeout <= 0:
            # the engine still has work (speak steps): time stands still until it waits, but not forever
            self._idle_reads += 1
            if self._idle_reads < MAX_STEPS_PER_CHUNK:
                return None
        self._idle_reads = 0
        chunk = self._next_chunk()
        if not self.realtime:
            self.clock.set(max(self.clock.now(), due))
        return chunk

    def _next_chunk(self) -> AudioChunk:
        """The next chunk, 20 ms at a time as a sound card's callbacks bring it: on the virtual clock, time moves
        to the end of each piece (plus the reference's look-ahead) before the sink plays it, so a hold at an onset
        (:meth:`core.engine.engine.Engine.hold_for_onset`) silences the rest of the chunk."""
        start = self.k * CHUNK_SAMPLES_16K
        for a in range(0, CHUNK_SAMPLES_16K, SUB_BLOCK_SAMPLES_16K):
            t_end = (start + a + SUB_BLOCK_SAMPLES_16K) / MODEL_INPUT_RATE
            due = t_end + REFERENCE_LOOKAHEAD_S
            if not self.realtime and self.clock.now() < due:
                self.clock.set(due)
            self.sink.advance(max(self.clock.now(), due))
            played = self.reference.take(start + a, SUB_BLOCK_SAMPLES_16K)
            self.user.assistant_audible(t_end, bool(np.any(np.abs(played) > 1e-4))
                                        or self.sink.pending_seconds() > 0)
            user = self.user.block(start + a, SUB_BLOCK_SAMPLES_16K)
            mic = user if self.room is None else np.asarray(self.room.mic(user, played), dtype=np.float32)
            self.chain.process(mic, played)
        chunk = self._pending.pop(0)
        self._pending.clear()
        chunk.t_start = self.k * CHUNK_SECONDS        # captured at k x 160 ms on the input timeline
        self.k += 1
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        return chunk


class SilentSource(ChunkSource):
    """Silence on the wall clock, chunk by chunk: keeps an engine's loop (and its sink) running when nobody speaks
    into a microphone (typed turns in a terminal)."""

    def __init__(self, clock: WallClock) -> None:
        self.clock = clock
        self.k = 0
        self._probs = np.zeros(CHUNK_SAMPLES_16K // 512, dtype=np.float32)
        self._zeros = np.zeros(CHUNK_SAMPLES_16K, dtype=np.float32)

    def read(self, timeout: float) -> AudioChunk | None:
        due = (self.k + 1) * CHUNK_SECONDS
        now = self.clock.now()
        if now < due:
            if timeout <= 0:
                return None
            self.clock.sleep_until(min(due, now + timeout))
            if self.clock.now() < due:
                return None
        chunk = AudioChunk(self._zeros, start=self.k * CHUNK_SAMPLES_16K, t_start=self.k * CHUNK_SECONDS,
                           vad_probs=self._probs)
        self.k += 1
        return chunk


def file_chain(room: Room | None, vad: VadConfig | None = None, aec: AecConfig | None = None) -> CaptureChain:
    """The capture chain of a file-driven run: the live chain's, with the echo canceller on only where there is an
    echo to cancel (a room); ``aec`` overrides."""
    if aec is None:
        aec = AecConfig() if room is not None else AecConfig(echo_cancellation=False, high_pass_filter=False)
    return CaptureChain(ChainConfig(aec=aec, vad=vad))


# ---------------------------------------------------------------------------------------------------------------
# a whole conversation


@dataclass
class ChatResult:
    input_s: float
    session_s: float                 # conversation time covered (input plus the drained answer)
    wall_s: float
    output_path: str
    output_rate: int
    turns: int
    answers: int
    interruptions: int
    errors: int
    rebuilds: int
    first_audio_ms: list[float] = field(default_factory=list)
    first_audio_est_ms: list[float] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    input_offset_s: float = 0.0      # session time at which the input began (the ready sound came first)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Tally:
    """Counts a few things off the bus for the summary."""

    def __init__(self) -> None:
        self.answers = 0
        self.interruptions = 0
        self.first_audio_ms: list[float] = []
        self.first_audio_est_ms: list[float] = []

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, Latency):
            self.answers += 1
            self.first_audio_ms.append(ev.first_audio_ms)
            self.first_audio_est_ms.append(ev.first_audio_est_ms)
        elif isinstance(ev, Interruption):
            self.interruptions += 1


def run_conversation(backend: Backend, audio_16k: np.ndarray | UserInput, output_path: str | Path, *,
                     events_path: str | Path | None = None, realtime: bool = False,
                     config: EngineConfig | None = None, system_prompt: str | None = None,
                     room: Room | None = None, vad: VadConfig | None = None,
                     subscribers: Iterable[Callable[[Event], None]] = (),
                     on_engine: Callable[[Engine], None] | None = None,
                     on_chunk: Callable[[AudioChunk], None] | None = None,
                     ready_sound: bool = False) -> ChatResult:
    """Run a whole conversation from 16 kHz audio (or a :class:`UserInput`) through a fresh :class:`Engine`.

    ``ready_sound``: the session begins with the "ready" sound, as the app's does when its audio opens
    (:mod:`core.audio.ready_sound`; it is in the output file and, through a room, in the microphone), and the
    user's input starts :data:`READY_LEAD_S` later, when the sound and its echo are over: event times are then
    that much later than the input's own (``ChatResult.input_offset_s``; ``core.harness.score(offset_s=...)``).

    ``subscribers`` get every event; ``on_engine`` is called with the engine before it starts (a session recorder
    tap wraps ``engine.sink`` there, see ``core.session.filetap``); ``on_chunk`` sees every chunk the engine gets."""
    config = config or EngineConfig()
    user = audio_16k if not isinstance(audio_16k, np.ndarray) else WavUser(audio_16k)
    offset_s = input_offset_s(ready_sound)
    if ready_sound:
        user = DelayedUser(user, int(round(offset_s * MODEL_INPUT_RATE)))
    input_s = len(audio_16k) / MODEL_INPUT_RATE if isinstance(audio_16k, np.ndarray) else None
    clock: VirtualClock | WallClock = WallClock() if realtime else VirtualClock()
    bus = EventBus(clock)
    writer = JsonlWriter(events_path) if events_path else None
    subs = [bus.subscribe(writer)] if writer else []
    tally = _Tally()
    subs.append(bus.subscribe(tally))
    subs += [bus.subscribe(s) for s in subscribers]
    wav = WavWriter(output_path, backend.output_rate)
    sink = VirtualAudioSink(clock, backend.output_rate, writer=wav.write)
    engine = Engine(backend, sink, bus=bus, config=config, system_prompt=system_prompt)
    if on_engine is not None:
        on_engine(engine)
    chain = file_chain(room, vad)
    chain.on_onset = engine.hold_for_onset      # as the live stack wires it (core.compose.live)
    source = FileSource(user, clock, sink, chain=chain, room=room, realtime=realtime,
                        drain_limit_s=config.drain_limit_s, on_chunk=on_chunk)
    wall0 = time.perf_counter()
    try:
        if realtime:
            clock.restart()
        if ready_sound:
            play_ready_sound(engine.sink, backend.output_rate)
        engine.run(source, poll_s=0.005 if realtime else 0.01, drain=True)
        engine.tick()
        engine.close()
    finally:
        wav.close()
        for sub in subs:
            sub.close()
        if writer:
            writer.close()
    if input_s is None:
        input_s = (source.k * CHUNK_SECONDS if source._ended_at is None else source._ended_at * CHUNK_SECONDS) - offset_s
    return ChatResult(
        input_s=round(input_s, 3), session_s=round(clock.now(), 3),
        wall_s=round(time.perf_counter() - wall0, 3), output_path=str(output_path), output_rate=backend.output_rate,
        input_offset_s=offset_s,
        turns=engine.turn, answers=tally.answers, interruptions=tally.interruptions, errors=engine.errors,
        rebuilds=engine.rebuilds, first_audio_ms=tally.first_audio_ms, first_audio_est_ms=tally.first_audio_est_ms,
        stats=engine.stats.summary())
