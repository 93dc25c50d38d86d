"""File-driven conversations: a WAV in, what the assistant played (on the input's timeline) out, events as JSONL.

Fast mode (default): a :class:`~core.engine.clock.VirtualClock` advances 160 ms per input chunk and a
:class:`~core.engine.sink.VirtualAudioSink` plays the reply at its real rate on that clock, so turns, interruptions
and what was heard come out as in real time while compute time is not waited for (it is reported in the events'
``compute_ms`` fields). Realtime mode paces the same loop with the wall clock.

There is no echo in a file, so the VAD runs on the input directly, but it still gets the "assistant audible" flag,
so the echo-aware (barge-in) thresholds apply while the assistant speaks, as they would live.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from core.audio.interfaces import StreamingVad
from core.constants import CHUNK_SAMPLES_16K, CHUNK_SECONDS, MODEL_INPUT_RATE
from core.engine.backend import Backend
from core.engine.clock import VirtualClock, WallClock
from core.engine.config import EngineConfig
from core.engine.engine import Engine
from core.engine.events import Event, EventBus, JsonlWriter
from core.engine.sink import VirtualAudioSink

log = logging.getLogger(__name__)

MAX_STEPS_PER_CHUNK = 10_000   # a reply iterator that never yields audio cannot spin a fast-mode run forever


def load_wav_16k(path: str | Path) -> np.ndarray:
    """Any WAV (any rate, any channel count) as 16 kHz mono float32 (channels averaged, soxr resampling)."""
    import soundfile as sf
    import soxr

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != MODEL_INPUT_RATE:
        mono = soxr.resample(mono, rate, MODEL_INPUT_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


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
        self._file.write(np.clip(block, -1.0, 1.0))
        self.samples += len(block)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


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
        if ev.type == "latency":
            self.answers += 1
            self.first_audio_ms.append(ev.data["first_audio_ms"])
            self.first_audio_est_ms.append(ev.data["first_audio_est_ms"])
        elif ev.type == "interruption":
            self.interruptions += 1


def run_conversation(backend: Backend, vad: StreamingVad, audio_16k: np.ndarray, output_path: str | Path, *,
                     events_path: str | Path | None = None, realtime: bool = False,
                     config: EngineConfig | None = None, system_prompt: str | None = None,
                     subscribers: Iterable[Callable[[Event], None]] = (),
                     on_engine: Callable[[Engine], None] | None = None) -> ChatResult:
    """Run a whole conversation from 16 kHz audio through a fresh :class:`Engine`.

    ``subscribers`` get every event; ``on_engine`` is called with the engine before it starts (a session recorder
    tap wraps ``engine.sink`` there, see ``core.session.filetap``)."""
    config = config or EngineConfig()
    clock = WallClock() if realtime else VirtualClock()
    bus = EventBus(clock)
    writer = JsonlWriter(events_path) if events_path else None
    subs = [bus.subscribe(writer)] if writer else []
    tally = _Tally()
    subs.append(bus.subscribe(tally))
    subs += [bus.subscribe(s) for s in subscribers]
    wav = WavWriter(output_path, backend.output_rate)
    sink = VirtualAudioSink(clock, backend.output_rate, writer=wav.write)
    engine = Engine(backend, vad, sink, bus=bus, config=config, system_prompt=system_prompt)
    if on_engine is not None:
        on_engine(engine)
    wall0 = time.perf_counter()
    try:
        if realtime:
            clock.restart()
        engine.start()
        n_in = math.ceil(len(audio_16k) / CHUNK_SAMPLES_16K)
        drain = math.ceil(config.drain_limit_s / CHUNK_SECONDS)
        silence = np.zeros(CHUNK_SAMPLES_16K, np.float32)
        k = 0
        ended = False
        while True:
            if k < n_in:
                chunk = audio_16k[k * CHUNK_SAMPLES_16K:(k + 1) * CHUNK_SAMPLES_16K]
                if len(chunk) < CHUNK_SAMPLES_16K:
                    chunk = np.concatenate([chunk, silence[:CHUNK_SAMPLES_16K - len(chunk)]])
            else:
                if not ended:
                    engine.end_of_input()
                    ended = True
                if not engine.busy:
                    break
                if k >= n_in + drain:
                    bus.emit("warning", engine.turn, kind="drain_limit",
                             message=f"the answer was still running {config.drain_limit_s:g} s after the input ended")
                    break
                chunk = silence
            due = (k + 1) * CHUNK_SECONDS
            if realtime:
                _wait_realtime(engine, clock, due)
            else:
                clock.set(due)
            engine.process_chunk(chunk, None, k * CHUNK_SECONDS)   # captured at k x 160 ms on the input timeline
            if not realtime:
                steps = 0
                while engine.wants_speak_step() and steps < MAX_STEPS_PER_CHUNK:
                    engine.speak_step()
                    steps += 1
            k += 1
        engine.tick()
        engine.finish_stats()
        engine.close()
    finally:
        wav.close()
        for sub in subs:
            sub.close()
        if writer:
            writer.close()
    return ChatResult(
        input_s=round(len(audio_16k) / MODEL_INPUT_RATE, 3), session_s=round(clock.now(), 3),
        wall_s=round(time.perf_counter() - wall0, 3), output_path=str(output_path), output_rate=backend.output_rate,
        turns=engine.turn, answers=tally.answers, interruptions=tally.interruptions, errors=engine.errors,
        rebuilds=engine.rebuilds, first_audio_ms=tally.first_audio_ms, first_audio_est_ms=tally.first_audio_est_ms,
        stats=engine.stats.summary())


def _wait_realtime(engine: Engine, clock: WallClock, due: float) -> None:
    """Until the next chunk is due on the wall clock: speak steps when playback needs audio, else short sleeps."""
    while True:
        engine.tick()
        remaining = due - clock.now()
        if remaining <= 0:
            return
        if engine.wants_speak_step():
            engine.speak_step()
        else:
            time.sleep(min(remaining, 0.005))
