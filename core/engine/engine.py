"""The streaming dialogue engine: one worker thread interleaves listen steps and speak steps.

Scheduling (one thread, no locks around the model):

* a *listen step* handles one 160 ms input chunk: echo-aware VAD (thresholds keyed on whether the assistant is
  audible), then, while a user input is open, :meth:`Backend.listen` and the turn decision. A chunk that has arrived
  is always handled before the next speak step, because listen steps decide barge-in;
* a *speak step* is one ``next()`` of the backend's reply iterator (a few text tokens and/or one audio piece). Speak
  steps run only while less than ``playback_lead_s`` of audio is queued, so playback never starves when the model
  is fast enough and an interruption wastes little generation.

Duplex state (emitted as ``state`` events): ``idle`` -> ``listening`` -> ``user_speaking`` (VAD onset) ->
``thinking`` (the backend said 'ss', no audio yet) -> ``speaking`` -> ``listening``; ``interrupted`` when the user
takes the turn during an answer.

While an answer is alive (thinking or speaking) a VAD onset opens a *candidate* turn that is listened to without
stopping the answer. Only the backend's 'ss' for it (with at least ``barge_in_min_voiced_s`` of voiced audio)
interrupts: the reply is cancelled, playback flushed at once, the heard/unheard text computed from the played
samples, :meth:`Backend.interrupted` called with the heard text, and the candidate is listened to again from its
pre-roll as the new user turn on the corrected memory. 'el', a timeout, or too little voiced audio drop the candidate
and the answer goes on.

Voice activity: the engine runs no VAD of its own. Every chunk comes from the capture chain
(:mod:`core.audio.chain`, live or file-driven) with its speech probabilities per 32 ms window and its onset/offset
decisions; the engine cuts turns from those and hands the probabilities on to :meth:`Backend.listen`.

There is ONE loop, :meth:`Engine.run`: the app (``core.compose.live.LiveStack``), ``parley chat`` (real-time or on
a virtual clock, ``core.engine.filemode``), replay and the benchmarks all drive the engine through it. Other
threads talk to a running engine only through :meth:`Engine.call_soon` (stop speaking, push-to-talk, new
conversation, settings): the loop runs those commands between two steps.
"""

from __future__ import annotations

import collections
import enum
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass, field, replace
from collections.abc import Generator
from typing import Any, Callable, Iterator

import numpy as np

from core.audio.interfaces import AudioChunk, AudioSink
from core.constants import CHUNK_SAMPLES_16K, MODEL_INPUT_RATE, VAD_WINDOW_SAMPLES_16K
from core.engine.alignment import ReplyTranscript, finish_transcript
from core.engine.backend import Backend, Conversation, ListenResult, ReplyPiece, rebuild_context
from core.engine.clock import WallClock
from core.engine.config import EngineConfig
from core.engine.events import (
    AssistantText,
    AudioOut,
    AudioPlayed,
    Clock,
    ContextRebuild,
    ContextUpdate,
    ErrorEvent,
    EventBus,
    GenerationDone,
    InfoEvent,
    Interruption,
    Latency,
    Playback,
    SessionStart,
    StateChange,
    StateProbs,
    TurnDecision,
    UserText,
    VadLevel,
    VadOffset,
    VadOnset,
    WarningEvent,
)
from core.queues import DropOldestQueue
from core.runtime import free_cuda_cache, is_out_of_memory
from core.speech_acts import command_words, content_words, has_feedback, is_backchannel, is_command_alone
from core.speech_acts import words as speech_words

log = logging.getLogger(__name__)

try:
    import psutil

    _PROCESS = psutil.Process()
except Exception:  # pragma: no cover - psutil is a dependency, but memory figures are optional
    _PROCESS = None


class DuplexState(str, enum.Enum):
    IDLE = "idle"
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"
    INTERRUPTED = "interrupted"


WINDOWS_PER_CHUNK = CHUNK_SAMPLES_16K // VAD_WINDOW_SAMPLES_16K


class ChunkSource:
    """Where :meth:`Engine.run` reads its input: :class:`~core.audio.interfaces.AudioChunk` s from the capture
    chain, whose ``t_start`` is the capture time of their first sample on the SESSION clock.

    :meth:`read` returns the next chunk, or None when none arrived within ``timeout`` seconds, and raises
    :class:`EOFError` at the end of the input. :meth:`restart_vad` asks the chain's VAD to take the next voiced
    run as a new onset (a turn was decided while the user may still be speaking); sources without a VAD of their
    own may ignore it."""

    def read(self, timeout: float) -> AudioChunk | None:
        raise NotImplementedError

    def restart_vad(self) -> None:
        """Optional: see the class docstring."""


class QueueChunkSource(ChunkSource):
    """A bounded bridge from the audio layer's capture thread to the engine's thread.

    The capture side calls :meth:`push` (never blocks: when the engine is ``maxsize`` chunks behind, the oldest
    chunk is dropped and counted in ``overruns``); the engine reads. :meth:`close` ends the stream.
    ``restart_vad``: what to call when the engine asks for a VAD restart (the chain lives on the capture side)."""

    def __init__(self, maxsize: int = 64, restart_vad: Callable[[], None] | None = None) -> None:
        self._queue: DropOldestQueue[AudioChunk] = DropOldestQueue(maxsize)
        self._restart = restart_vad

    @property
    def overruns(self) -> int:
        return self._queue.dropped

    def push(self, chunk: AudioChunk) -> None:
        self._queue.put(chunk)

    def close(self) -> None:
        self._queue.close()

    def read(self, timeout: float) -> AudioChunk | None:
        return self._queue.get(timeout)

    def restart_vad(self) -> None:
        if self._restart is not None:
            self._restart()


@dataclass
class _Input:
    """An open user input: from the VAD onset until the backend's decision (or a timeout)."""

    turn: int
    opened_t: float                      # clock time
    onset_sample: int                    # position in the 16 kHz input stream
    during_reply: bool                   # a barge-in candidate (an answer was alive at the onset)
    began_during_reply: bool = False     # it started while the assistant spoke (stays True when it ends meanwhile)
    joined: bool = False                 # resumed speech joined the previous turn (its answer was dropped)
    paused_at: float | None = None       # the answer's playback was held for this candidate at this time
    joins: bool = False                  # if it takes the turn, it continues the previous one (the user paused)
    # every chunk fed to listen(), pre-roll included, with its VAD window probabilities
    audio: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    voiced_windows: int = 0
    speech_end_t: float | None = None    # clock time of the end of the last voiced VAD window
    offset_t: float | None = None        # clock time of the VAD offset (None while speech goes on)
    user_text: str = ""
    text_logprob: float | None = None    # how sure the recogniser was of user_text (None: the profile does not say)
    emitted_text: str = ""
    final_text: bool = False
    end_pos: int = 0                     # stream position where the audio listened to so far ends
    continued: int = 0                   # times it was listened to again after a pause inside it
    # judged not a barge-in at a pause: (until when the user may resume, why, voiced windows at that moment)
    lingering: tuple[float, str, int] | None = None

    @property
    def voiced_s(self) -> float:
        return self.voiced_windows * VAD_WINDOW_SAMPLES_16K / MODEL_INPUT_RATE


@dataclass
class _Reply:
    turn: int
    cancel: threading.Event
    iterator: Iterator[ReplyPiece] | None
    transcript: ReplyTranscript
    decided_t: float
    speech_end_t: float
    user_text: str
    input_audio: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)   # what the turn listened to
    input_end: int = 0                   # stream position where that audio ended
    compute_s: float = 0.0               # wall seconds in backend.reply steps until the first audio
    steps: int = 0
    first_audio_t: float | None = None
    first_played_t: float | None = None
    played_reported: int = 0
    latency_done: bool = False
    failed: bool = False
    slow_warned: bool = False


class _Stats:
    """Scheduler overhead per chunk: wall time in engine code, excluding backend and VAD calls."""

    def __init__(self, keep: int = 50_000) -> None:
        self.per_chunk_ms: collections.deque[float] = collections.deque(maxlen=keep)
        self.chunks = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.backend_ms = 0.0
        self.speak_steps = 0

    def add_chunk(self, overhead_ms: float) -> None:
        self.per_chunk_ms.append(overhead_ms)
        self.chunks += 1
        self.total_ms += overhead_ms
        self.max_ms = max(self.max_ms, overhead_ms)

    def summary(self) -> dict[str, Any]:
        values = np.asarray(self.per_chunk_ms, dtype=np.float64)
        pct = (lambda q: round(float(np.percentile(values, q)), 4)) if len(values) else (lambda q: None)
        return {
            "chunks": self.chunks,
            "speak_steps": self.speak_steps,
            "overhead_ms_mean": round(self.total_ms / self.chunks, 4) if self.chunks else None,
            "overhead_ms_p50": pct(50),
            "overhead_ms_p95": pct(95),
            "overhead_ms_max": round(self.max_ms, 4),
            "backend_ms_total": round(self.backend_ms, 1),
        }


class Engine:
    """The dialogue engine. Create it, then drive it from ONE thread with :meth:`run` (see the module doc).

    ``backend``: a loaded profile. ``sink``: where assistant audio goes. ``bus``: the session's event bus (its clock
    stamps the events; a :class:`WallClock` when it has none).
    Thread rule: every method except :meth:`call_soon`, :meth:`request_stop` and the read-only properties must be
    called from the engine's own thread (the one in :meth:`run`).
    """

    def __init__(self, backend: Backend, sink: AudioSink, *, bus: EventBus | None = None,
                 clock: Clock | None = None, config: EngineConfig | None = None,
                 system_prompt: str | None = None) -> None:
        self.backend = backend
        self.sink = sink
        self.config = config or EngineConfig()
        if bus is None:
            bus = EventBus(clock or WallClock())
        elif clock is not None:
            bus.clock = clock
        elif bus.clock is None:
            bus.clock = WallClock()
        self.bus = bus
        self.clock: Clock = bus.clock
        self.system_prompt = system_prompt
        self.conv: Conversation | None = None
        self.state = DuplexState.IDLE
        self.turn = 0
        self.stats = _Stats()
        self.history: collections.deque[dict[str, str]] = collections.deque(maxlen=2 * self.config.history_turns)
        self.rebuilds = 0
        self.errors = 0
        self._input: _Input | None = None
        self._reply: _Reply | None = None
        self._stream_pos = 0                         # 16 kHz samples received so far
        self._clock_lag = 0.0                        # session clock minus stream time, at the latest chunk
        # Recent input chunks with their VAD probabilities (4 s), to cut a new turn's audio from its onset.
        self._recent: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque(maxlen=25)
        self._vad_in_speech = False
        self._recent_voiced: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        self._last_audible_t = -1e9
        self._conv_dirty = False
        self._persona: str | None = system_prompt
        self._stop = threading.Event()
        self._commands: queue.SimpleQueue[Callable[[], Any]] = queue.SimpleQueue()
        self._ptt_held = False               # push-to-talk held: the turn stays open until it is released
        self._ptt_heard = False              # ... and speech was heard while it was held
        self._source: ChunkSource | None = None
        self._chunk_overhead_s = 0.0
        self._backend_s = 0.0
        # An answer held by the capture chain at an onset, before the onset's chunk got here: (stream position of
        # the decision in the producer's stream, clock time of the hold). Set from the audio thread.
        self._onset_hold: tuple[int, float] | None = None
        self._onset_hold_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------------------
    # life cycle

    def start(self, kind: str = "session_start") -> None:
        """Create the conversation (system prompt prefilled) and start listening."""
        t0 = time.perf_counter()
        self.conv = self.backend.new_conversation(self.system_prompt)
        self._persona = self.conv.system_prompt     # the base of context rebuilds
        self.bus.emit(SessionStart(turn=self.turn, kind=kind, profile=self.backend.name,
                                   output_rate=self.backend.output_rate, context_tokens=self.conv.context_tokens,
                                   config=self.config.to_dict(),
                                   compute_ms=round(1000 * (time.perf_counter() - t0), 3)))
        self._set_state(DuplexState.LISTENING)

    def close(self, flush: bool = False) -> None:
        """Stop generating any answer (``flush``: also drop the audio still queued) and go idle."""
        if flush:
            try:
                self.sink.flush()
            except Exception as exc:  # the sink failing must not keep the engine from closing
                log.warning("flush on close failed: %s", exc)
        if self._reply is not None:
            self._reply.cancel.set()
            self._close_iterator(self._reply)
            self._reply = None
        self._input = None
        self._set_state(DuplexState.IDLE)

    def set_persona(self, prompt: str | None) -> None:
        """The persona (system prompt) for new conversations and context rebuilds (engine thread)."""
        self.system_prompt = prompt
        self._persona = prompt

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def call_soon(self, command: Callable[[], Any]) -> None:
        """Run ``command()`` in the engine's thread between two steps of :meth:`run` (thread-safe). A command that
        raises is reported as an error event; the loop goes on."""
        self._commands.put(command)

    @property
    def busy(self) -> bool:
        """An input is open, an answer is being generated, or audio is still queued for playback."""
        return self._input is not None or self._reply is not None or self.sink.pending_seconds() > 0

    @property
    def replying(self) -> bool:
        return self._reply is not None

    # ------------------------------------------------------------------------------------------------------------
    # the loop

    def run(self, source: ChunkSource, stop: threading.Event | None = None, poll_s: float = 0.01,
            idle: Callable[[], None] | None = None, drain: bool = False) -> None:
        """Drive the engine until ``stop`` (or :meth:`request_stop`) is set or the input ends.

        Each pass runs the queued commands, advances time (:meth:`tick`), calls ``idle`` (e.g. the app's meters),
        then handles every available chunk before one speak step when playback needs audio; with nothing to do it
        waits up to ``poll_s`` for input. At the end of the input the open turn gets its final decision; with
        ``drain`` the loop then goes on (the source keeps time running with silence) until the answer has played
        or the source ends a second time (a drain limit)."""
        stop = stop or self._stop
        self._source = source
        with self._onset_hold_lock:
            self._onset_hold = None      # a hold from an earlier source's stream (positions start over)
        draining = False
        try:
            if self.conv is None:
                self.start()
            elif self.state == DuplexState.IDLE:
                self._set_state(DuplexState.LISTENING)
            while not (stop.is_set() or self._stop.is_set()):
                self._run_commands()
                self.tick()
                if idle is not None:
                    idle()
                try:
                    chunk = source.read(0.0)
                    if chunk is None and not self.wants_speak_step():
                        chunk = source.read(poll_s)
                except EOFError:
                    if draining:
                        self.bus.emit(WarningEvent(turn=self.turn, kind="drain_limit",
                                                   message=f"the answer was still running "
                                                           f"{self.config.drain_limit_s:g} s after the input ended"))
                        break
                    self.end_of_input()
                    if not drain or not self.busy:
                        break
                    draining = True
                    continue
                if chunk is not None:
                    self.process_chunk(chunk)
                elif self.wants_speak_step():
                    self.speak_step()
                if draining and not self.busy:
                    break
            self._run_commands()
        finally:
            self._source = None
            self.finish_stats()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except Exception as exc:
                log.exception("engine command failed")
                self.bus.emit(ErrorEvent(turn=self.turn, where="command", kind="backend",
                                         message=f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------------------------------------------------
    # time and playback

    def tick(self) -> None:
        """Advance a clock-driven sink, report played audio and first-played latency, finish drained answers, and
        do between-turn housekeeping (context rebuild)."""
        t0 = time.perf_counter()
        backend_before = self._backend_s
        now = self.clock.now()
        self.sink.advance(now)
        if self.sink.pending_seconds() > 0:
            self._last_audible_t = now
        reply = self._reply
        if reply is not None:
            self._report_played(reply, now)
            if reply.iterator is None and self.sink.pending_seconds() <= 0:
                self._finish_reply(reply)
        if self._reply is None and self._input is None:
            self._maybe_rebuild_context()
        self._chunk_overhead_s += (time.perf_counter() - t0) - (self._backend_s - backend_before)

    def _report_played(self, reply: _Reply, now: float, force: bool = False) -> None:
        played = self.sink.played_samples(reply.turn)
        # At most one audio_played event per ~100 ms of audio (the live loop ticks every few ms), plus the last.
        step = self.backend.output_rate // 10
        if played > reply.played_reported and (force or played - reply.played_reported >= step
                                               or played >= reply.transcript.samples):
            self.bus.emit(AudioPlayed(turn=reply.turn, samples=played - reply.played_reported, total=played,
                                      rate=self.backend.output_rate))
            reply.played_reported = played
        if played > 0 and reply.first_played_t is None:
            t = self.sink.first_play_time(reply.turn)
            reply.first_played_t = now if t is None else t
            if reply.first_audio_t is not None:   # a sink's own timestamps may round below the hand-over time
                reply.first_played_t = max(reply.first_played_t, reply.first_audio_t)
        if reply.first_played_t is not None and reply.first_audio_t is not None and not reply.latency_done:
            reply.latency_done = True
            ms = lambda t: round(1000.0 * (t - reply.speech_end_t), 1)  # noqa: E731
            decision_ms = ms(reply.decided_t)
            compute_ms = round(1000.0 * reply.compute_s, 1)
            virtual = self.clock.virtual
            self.bus.emit(Latency(turn=reply.turn, first_audio_ms=ms(reply.first_audio_t),
                                  first_played_ms=ms(reply.first_played_t), decision_ms=decision_ms,
                                  compute_ms=compute_ms, steps_to_first_audio=reply.steps,
                                  first_audio_est_ms=round(decision_ms + compute_ms, 1) if virtual
                                  else ms(reply.first_audio_t),
                                  virtual_clock=virtual))

    def _assistant_audible(self, now: float) -> bool:
        if self.sink.pending_seconds() > 0:
            self._last_audible_t = now
            return True
        return now - self._last_audible_t < self.config.echo_tail_s

    # ------------------------------------------------------------------------------------------------------------
    # listen step

    def hold_for_onset(self, position: int) -> None:
        """The capture chain's VAD decided an onset over the assistant's audio at stream ``position``: hold the
        answer now (any thread; the chain calls it from the audio thread). The onset's chunk, when the engine
        gets to it, opens a candidate that takes this hold as its own pause (its time is the decision's), or, when
        no candidate holds the answer, playback goes on (:meth:`_settle_onset_hold`)."""
        if not self.config.hold_on_onset or self.config.pause_voiced_s > 0 or self._reply is None:
            return
        with self._onset_hold_lock:
            if self._onset_hold is not None:
                return
            self.sink.pause()
            self._onset_hold = (int(position), self.clock.now())

    def _take_onset_hold(self, chunk_end: int) -> float | None:
        """The time of a hold whose onset lies in a chunk processed now (producer stream position ``chunk_end``
        or earlier), taking it over from the audio thread; None when there is none."""
        with self._onset_hold_lock:
            hold = self._onset_hold
            if hold is None or hold[0] > chunk_end:
                return None
            self._onset_hold = None
        return hold[1]

    def _settle_onset_hold(self, held_at: float | None) -> None:
        """A hold from :meth:`hold_for_onset` that no candidate took over: the answer plays on."""
        if held_at is None:
            return
        inp = self._input
        if inp is not None and inp.paused_at is not None:
            return          # the engine holds the answer itself
        self.sink.resume()

    def process_chunk(self, chunk: AudioChunk) -> None:
        """One listen step on a 160 ms chunk from the capture chain (2560 samples of 16 kHz mono float32, with the
        chain's VAD probabilities and onset/offset decisions).

        ``chunk.t_start``: session-clock time at which its first sample was captured; it makes "end of user speech"
        (and so every latency figure) exact even when the chunk waited in a queue. Without it the chunk is taken to
        end now."""
        self._close_chunk_stats()
        self.tick()
        t0 = time.perf_counter()
        backend_before = self._backend_s
        # the model hears the near-end path (the user's voice whole in double talk) when the chain has one; the
        # chain's VAD results, decided on AEC3's output, say when
        heard = chunk.near_16k if chunk.near_16k is not None else chunk.samples_16k
        samples = np.asarray(heard, dtype=np.float32).reshape(-1)
        if len(samples) != CHUNK_SAMPLES_16K:
            raise ValueError(f"a chunk is {CHUNK_SAMPLES_16K} samples, got {len(samples)}")
        if chunk.vad_probs is None or len(chunk.vad_probs) != WINDOWS_PER_CHUNK:
            raise ValueError("a chunk must carry the capture chain's VAD probabilities (one per 32 ms window)")
        probs = np.asarray(chunk.vad_probs, dtype=np.float32)
        if self.conv is None:
            self.start()
        now = self.clock.now()
        chunk_start = self._stream_pos
        self._stream_pos += len(samples)
        self._recent.append((chunk_start, samples, probs))
        # Clock time minus stream time: maps 16 kHz stream positions to the session clock (0 on the virtual clock).
        chunk_end_t = now if chunk.t_start is None else chunk.t_start + len(samples) / MODEL_INPUT_RATE
        self._clock_lag = chunk_end_t - self._stream_pos / MODEL_INPUT_RATE
        shift = chunk_start - chunk.start          # producer stream position -> engine stream position

        # --- voiced windows (the end of speech is known to 32 ms) -------------------------------------------------
        audible = self._assistant_audible(now)
        for w, prob in enumerate(probs):
            end_sample = chunk_start + (w + 1) * VAD_WINDOW_SAMPLES_16K
            if prob >= self.config.voiced_prob:
                self._recent_voiced.append((end_sample, self._clock_t(end_sample)))
                if self._input is not None:
                    self._input.voiced_windows += 1
                    self._input.speech_end_t = self._clock_t(end_sample)
        self.bus.emit(VadLevel(turn=self.turn, vad=round(float(probs.max()), 4), assistant_audible=audible))

        opened_now = False
        for ev in chunk.vad_events:
            sample = int(ev.sample) + shift
            if ev.kind == "onset":
                self._vad_in_speech = True
                if self._input is None:
                    self._open_input(sample, float(ev.prob), now)
                    opened_now = True
                else:
                    self._input.offset_t = None
                    self.bus.emit(VadOnset(turn=self._input.turn, at=round(sample / MODEL_INPUT_RATE, 4),
                                           clock_at=self._clock_at(sample), prob=round(float(ev.prob), 4),
                                           reopened=True))
            elif ev.kind == "offset":
                self._vad_in_speech = False
                turn = self._input.turn if self._input is not None else self.turn
                self.bus.emit(VadOffset(turn=turn, at=round(sample / MODEL_INPUT_RATE, 4),
                                        prob=round(float(ev.prob), 4)))
                if self._input is not None and self._input.offset_t is None:
                    self._input.offset_t = now

        # --- the backend's listen step and its decision ------------------------------------------------------------
        if self._input is not None and self._input.lingering is not None:
            self._linger_step(self._input, now)
        elif self._input is not None and not opened_now:
            self._input.audio.append((samples, probs))
            self._input.end_pos = self._stream_pos
            result = self._listen(self._input, samples, probs)
            if result is not None:
                self._decide(self._input, result)
        held_at = self._take_onset_hold(chunk.start + len(samples))
        inp = self._input
        if inp is not None and inp.during_reply and self._reply is not None and inp.lingering is None:
            self._candidate_step(inp, now, held_at)
        self._settle_onset_hold(held_at)
        if self._input is not None:
            self._check_timeouts(self._input, now)

        self._chunk_overhead_s += (time.perf_counter() - t0) - (self._backend_s - backend_before)

    def finish_stats(self) -> None:
        """Count the time since the last chunk as that chunk's overhead (call once at the end of a run)."""
        self._close_chunk_stats()

    def _close_chunk_stats(self) -> None:
        if self._stream_pos > 0:
            self.stats.add_chunk(1000.0 * self._chunk_overhead_s)
        self._chunk_overhead_s = 0.0

    def _open_input(self, onset_sample: int, prob: float, now: float) -> None:
        if self._ptt_held:
            self._ptt_heard = True
        reply = self._reply
        joinable = reply is not None and self._joins_previous_turn(reply, self._resumed_t(reply, onset_sample))
        self.turn += 1
        during = reply is not None
        inp = _Input(turn=self.turn, opened_t=now, onset_sample=onset_sample, during_reply=during,
                     began_during_reply=during, joins=joinable)
        inp.voiced_windows = sum(1 for end, _ in self._recent_voiced if end > onset_sample)
        ends = [t for end, t in self._recent_voiced if end > onset_sample]
        inp.speech_end_t = ends[-1] if ends else now
        self._input = inp
        self.bus.emit(VadOnset(turn=inp.turn, at=round(onset_sample / MODEL_INPUT_RATE, 4),
                               clock_at=self._clock_at(onset_sample), prob=round(prob, 4), during_reply=during))
        if not during:
            self._set_state(DuplexState.USER_SPEAKING)
        self._begin_listening(inp, self._turn_audio_from_onset(onset_sample))

    def _clock_t(self, stream_sample: int) -> float:
        """A 16 kHz input stream position on the session clock (as of the latest chunk)."""
        return stream_sample / MODEL_INPUT_RATE + self._clock_lag

    def _clock_at(self, stream_sample: int) -> float:
        """:meth:`_clock_t`, rounded for an event."""
        return round(self._clock_t(stream_sample), 4)

    def _joins_previous_turn(self, reply: _Reply, onset_t: float) -> bool:
        """Speech that resumes soon after a turn was decided, before much of its answer was heard, continues that
        turn (the user had only paused): it began (``onset_t``, session clock) within ``join_window_s`` of the end
        of their speech, while at most ``join_max_played_s`` of the answer had played (on a fast machine the answer
        starts at once; a word or two of it is no reason to split the user's sentence in two). What counts is the
        moment the user resumed, not the moment the VAD was sure of it: over the start of an answer the echo
        canceller still learns, and the onset is reported a few hundred milliseconds late."""
        if not reply.input_audio:
            return False
        if onset_t - reply.speech_end_t > self.config.join_window_s:
            return False
        played_s = self.sink.played_samples(reply.turn) / max(self.backend.output_rate, 1)
        if reply.first_played_t is not None:
            played_s = min(played_s, max(0.0, onset_t - reply.first_played_t))
        return played_s <= self.config.join_max_played_s

    def _resumed_t(self, reply: _Reply, onset_sample: int) -> float:
        """When the user resumed speaking (session clock), for an onset at ``onset_sample`` while ``reply`` plays:
        the onset, or the first of the voiced windows that lead up to it with no gap longer than
        ``join_lookback_gap_s``. Over the start of an answer the VAD's onset can come a second after the user
        resumed: its echo checks hold back windows in which silero already heard them. Never before the end of the
        speech the answer is for."""
        t = self._clock_t(onset_sample)
        gap = self.config.join_lookback_gap_s
        if gap <= 0:
            return t
        window_s = VAD_WINDOW_SAMPLES_16K / MODEL_INPUT_RATE
        for end, when in reversed(self._recent_voiced):
            if end > onset_sample:
                continue
            start = when - window_s          # windows come newest first: each one starts before the last
            if t - when > gap or start <= reply.speech_end_t:
                break
            t = start
        return t

    def _join_previous_turn(self, inp: _Input) -> None:
        """The candidate ``inp`` continues the turn whose answer is playing (the user had only paused): drop that
        answer, take the turn back from the backend's memory, and listen to the whole utterance (the earlier part,
        the pause and the resumed speech) again as that same turn."""
        reply = self._reply
        assert reply is not None
        turn = reply.turn
        now = self.clock.now()
        reply.cancel.set()
        self._close_iterator(reply)
        try:
            self.sink.flush()
        except Exception as exc:
            self._fault(exc, "sink", turn)
        self._reply = None
        try:
            self._timed(self.backend.retract_turn, self.conv)
        except Exception as exc:
            self._fault(exc, "retract_turn", turn)
        played = self.sink.played_samples(turn)
        self.bus.emit(Interruption(turn=turn, reply_turn=turn, heard_text=reply.transcript.heard_text(played).strip(),
                                   unheard_text=reply.transcript.unheard_text(played).strip(), reason="joined",
                                   decision_t=round(inp.paused_at if inp.paused_at is not None else now, 6),
                                   flush_t=round(now, 6)))
        self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason="joined", voiced_s=round(inp.voiced_s, 3),
                                   candidate=True))
        joined = _Input(turn=turn, opened_t=now, onset_sample=inp.onset_sample, during_reply=False, joined=True)
        joined.voiced_windows = inp.voiced_windows
        joined.speech_end_t = inp.speech_end_t
        joined.offset_t = inp.offset_t
        self._input = joined
        self.bus.emit(VadOnset(turn=turn, at=round(inp.onset_sample / MODEL_INPUT_RATE, 4),
                               clock_at=self._clock_at(inp.onset_sample), reopened=True))
        self._set_state(DuplexState.USER_SPEAKING)
        self._begin_listening(joined, list(reply.input_audio) + self._chunks_since(reply.input_end))

    def _chunks_since(self, pos: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The recent chunks (audio, VAD probabilities) that start at stream position ``pos`` or later."""
        return [(a, p) for start, a, p in self._recent if start >= pos]

    def _turn_audio_from_onset(self, onset_sample: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The recent chunks from the one holding the pre-roll's start (``pre_roll_s`` before the onset) up to now:
        whole chunks, so the VAD windows stay aligned with the audio."""
        first = onset_sample - int(self.config.pre_roll_s * MODEL_INPUT_RATE)
        picked = [(a, p) for start, a, p in self._recent if start + CHUNK_SAMPLES_16K > first]
        return picked or [(a, p) for _, a, p in list(self._recent)[-1:]]

    def _begin_listening(self, inp: _Input, audio: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """start_turn, then listen to ``audio`` (whole chunks); only the last chunk's decision counts."""
        try:
            self._timed(self.backend.start_turn, self.conv)
        except Exception as exc:
            self._fault(exc, "start_turn", inp.turn)
            self._close_input(inp, reason="error")
            return
        result = None
        inp.end_pos = self._stream_pos
        for i, (samples, probs) in enumerate(audio):
            inp.audio.append((samples, probs))
            result = self._listen(inp, samples, probs, preroll=i < len(audio) - 1)
            if result is None:
                return
        if result is not None and self._input is inp:
            self._decide(inp, result)

    def _listen(self, inp: _Input, chunk: np.ndarray, probs: np.ndarray,
                preroll: bool = False) -> ListenResult | None:
        try:
            result = self._timed(self.backend.listen, self.conv, chunk, probs)
        except Exception as exc:
            self._fault(exc, "listen", inp.turn)
            self._close_input(inp, reason="error")
            return None
        self.bus.emit(StateProbs(turn=inp.turn, probs=tuple(round(float(p), 4) for p in result.probs),
                                 state=result.state, preroll=preroll, candidate=inp.during_reply))
        self._user_text(inp, result)
        return result

    def _user_text(self, inp: _Input, result: ListenResult) -> None:
        text = result.user_text
        if text is None:
            return
        inp.user_text = text
        inp.text_logprob = result.text_logprob
        inp.final_text = inp.final_text or result.final
        if text == inp.emitted_text and not result.final:
            return
        if text.startswith(inp.emitted_text):
            piece = text[len(inp.emitted_text):]
            if piece or result.final:
                self.bus.emit(UserText(turn=inp.turn, text=piece, final=result.final, candidate=inp.during_reply,
                                       full=text if result.final else None))
        else:
            self.bus.emit(UserText(turn=inp.turn, text=text, partial=True, final=result.final,
                                   candidate=inp.during_reply))
        inp.emitted_text = text

    def _decide(self, inp: _Input, result: ListenResult, forced: str | None = None) -> None:
        state = result.state
        if state == "cl":
            return
        if self._ptt_held and forced is None:
            return      # push-to-talk: the turn ends when the key is released, not at a pause
        if state == "ss":
            barge_in = inp.during_reply and self._reply is not None
            reason = self._barge_in_veto(inp) if barge_in else self._not_a_turn(inp)
            if reason is not None and barge_in and self._may_go_on(inp, reason):
                return
            if reason == "command" and forced is None and self._may_go_on_after_command(inp):
                return
            if reason is not None:     # not a turn after all: say why, and drop the input
                self.bus.emit(TurnDecision(turn=inp.turn, state="el", backend_state="ss", reason=reason,
                                           voiced_s=round(inp.voiced_s, 3), candidate=barge_in))
                self._close_input(inp, reason=reason)
                return
            if barge_in:
                self._barge_in(inp)
                return
            self.bus.emit(TurnDecision(turn=inp.turn, state="ss", reason=forced or "backend",
                                       voiced_s=round(inp.voiced_s, 3), candidate=False))
            self._input = None
            if self._vad_in_speech:   # a new onset must be possible at once (docs/freeze-omni.md, turn-taking)
                self._restart_vad()
            self._start_reply(inp)
            return
        # 'el': a false onset, noise, a backchannel: nothing is answered and a running answer goes on.
        if forced is None and inp.during_reply and self._reply is not None and self._may_go_on(inp, "backend"):
            return
        self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason=forced or "backend",
                                   voiced_s=round(inp.voiced_s, 3), candidate=inp.during_reply))
        self._close_input(inp, reason="el")

    def _may_go_on(self, inp: _Input, reason: str) -> bool:
        """A candidate was just judged not a barge-in (``reason``) at a pause. While the user still speaks, or after
        a short first part that was not feedback ("Stop." heard as "It's not."), keep the answer held until
        ``candidate_grace_s`` after the end of their speech: if the user goes on (the VAD hears voice again), all of
        it is listened to again as one candidate. True: the candidate stays open.
        Only for profiles that transcribe: a state head's 'el' (Freeze-Omni) is its own decision."""
        cfg = self.config
        if (not self.backend.transcribes or inp.continued >= cfg.candidate_continuations
                or cfg.candidate_grace_s <= 0):
            return False
        text = (inp.user_text or "").strip()
        if not self._vad_in_speech and (reason == "backchannel" or not text or has_feedback(text)
                                        or inp.voiced_s > cfg.candidate_grace_max_voiced_s):
            return False      # "okay", "mm-hm", a laugh, more than a word: the user stopped; play on at once
        until = (inp.speech_end_t if inp.speech_end_t is not None else self.clock.now()) + cfg.candidate_grace_s
        if not self._vad_in_speech and until <= self.clock.now():
            return False     # judged long after the user stopped (a transcript that trailed off): not a pause
        inp.lingering = (until, reason, inp.voiced_windows)
        return True

    def _may_go_on_after_command(self, inp: _Input) -> bool:
        """A command alone that stopped the answer ("Stop.") was judged at a pause: the user may be going on
        ("Stop. [pause] What is two plus two?"). Keep the turn open, unanswered, for ``candidate_grace_s`` after
        the judgment (or the end of their speech, if later); if they speak again, all of it is listened to again as
        one turn. True: it stays open. Unlike a candidate's, this grace has no count of continuations: the tail of
        the command itself may come in the chunk after the judgment and go on with it; the turn's length
        (``max_turn_s``) bounds it."""
        cfg = self.config
        now = self.clock.now()
        if cfg.candidate_grace_s <= 0 or now - inp.opened_t >= cfg.max_turn_s:
            return False
        # nothing plays meanwhile, so the grace may run from the judgment: live, the turn can be judged later after
        # the command than the grace lasts (the VAD's offset, the recogniser on a machine busy with the cut answer)
        until = max(now, inp.speech_end_t if inp.speech_end_t is not None else now) + cfg.candidate_grace_s
        inp.lingering = (until, "command", inp.voiced_windows)
        self._set_state(DuplexState.LISTENING)      # the user sees the assistant listening, not a turn of theirs
        return True

    def _linger_step(self, inp: _Input, now: float) -> None:
        """A lingering input (see :meth:`_may_go_on` and :meth:`_may_go_on_after_command`): voice again goes on
        with it; no voice in time (or, for a candidate, the answer ended meanwhile): it is closed unanswered."""
        assert inp.lingering is not None
        until, reason, voiced = inp.lingering
        alive = self._reply is not None or not inp.during_reply
        if alive and inp.voiced_windows > voiced:
            if not inp.during_reply:
                self._set_state(DuplexState.USER_SPEAKING)
            self._continue_candidate(inp)
            return
        if now < until and alive:
            return
        self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason=reason, voiced_s=round(inp.voiced_s, 3),
                                   candidate=inp.during_reply))
        self._close_input(inp, reason=reason)
        if not inp.during_reply and self._vad_in_speech:
            self._restart_vad()     # whatever the user says next opens a turn of its own

    def _continue_candidate(self, inp: _Input) -> None:
        """The user goes on after a pause inside a candidate ("Stop. [pause] What is two plus two?"): listen to
        all of it again, the part already judged included, as one candidate (the answer stays held), or, after a
        command alone that stopped the answer, as one turn."""
        cont = _Input(turn=inp.turn, opened_t=inp.opened_t, onset_sample=inp.onset_sample,
                      during_reply=inp.during_reply, began_during_reply=inp.began_during_reply,
                      paused_at=inp.paused_at, joins=inp.joins, continued=inp.continued + 1)
        cont.voiced_windows = inp.voiced_windows
        cont.speech_end_t = inp.speech_end_t
        cont.emitted_text = inp.emitted_text    # what the transcript shows: the new text extends or replaces it
        self._input = cont
        self._begin_listening(cont, list(inp.audio) + self._chunks_since(inp.end_pos))

    def _barge_in_veto(self, inp: _Input) -> str | None:
        """Why a backend 'ss' for a candidate must not interrupt the answer (None: it may).

        Too little voiced audio (a cough, a click), or, when the profile gives a transcript, a backchannel ("mm-hm",
        "yeah", "okay", "I see", laughter; see :mod:`core.speech_acts`) or fewer than ``barge_in_min_words``
        content words, or words the recogniser was unsure of (``barge_in_min_logprob``); a command ("stop", "wait",
        "no", ...) alone is enough; speech that continues the user's own turn (``joins``) needs one content word.
        Words the assistant itself is saying in this answer do not count (residual echo in the transcript)."""
        cfg = self.config
        text = inp.user_text
        if text is None and not self.backend.transcribes:
            return "too_short" if inp.voiced_s < cfg.barge_in_min_voiced_s else None
        if not (text or "").strip():
            return "no_words"
        commands, content = self._user_words(text)
        if commands and inp.voiced_s >= cfg.barge_in_command_voiced_s:
            return None
        if inp.voiced_s < cfg.barge_in_min_voiced_s:
            return "too_short"
        if is_backchannel(text) or not content:
            return "backchannel"
        if inp.joins:   # the user resumed their own sentence right after its turn was decided: a word of their own
            return None  # continues it ("... of Italy" / "and Germany?"), however short; all of it is heard again
        if inp.text_logprob is not None and inp.text_logprob < cfg.barge_in_min_logprob:
            return "unsure"   # the recogniser made words of a hum or a cough over the echo ("MMA Kim")
        if len(speech_words(text)) > cfg.barge_in_max_words_per_s * inp.voiced_s + 1:
            return "implausible"
        if len(set(content)) < cfg.barge_in_min_words:
            return "too_few_words"
        if inp.voiced_s < cfg.barge_in_content_voiced_s and len(set(content)) < cfg.barge_in_early_words:
            # a short utterance with a word or two of content may be a backchannel Whisper made words of ("They make
            # me a chair."); three distinct content words are a question or a request ("What is 2 plus 2?", which
            # over the echo the VAD may credit with well under a second of voice: the transcript, from the
            # pre-roll, has all of it)
            return "too_short"
        return None

    def _candidate_step(self, inp: _Input, now: float, held_at: float | None = None) -> None:
        """A candidate listened to while the answer plays: hold the answer's playback as soon as it holds a little
        voiced speech (the user hears the assistant stop at once, and the rest of their words come without echo);
        take the turn when the transcript shows a barge-in; play on at once when it ended as a backchannel.
        ``held_at``: the capture chain already held the answer at this time, at the onset (:meth:`hold_for_onset`)."""
        cfg = self.config
        if inp.paused_at is None and inp.voiced_s >= cfg.pause_voiced_s:
            inp.paused_at = now if held_at is None else min(held_at, now)
            self.sink.pause()
            self.bus.emit(Playback(turn=inp.turn, paused=True, reason="user_speaking", reply_turn=self._reply.turn))
        if self._interrupting(inp):
            self._barge_in(inp, early=True)
            return
        text = inp.user_text
        settled = inp.paused_at is None or now - inp.paused_at >= cfg.echo_tail_s + 0.25   # the echo has died away
        if inp.offset_t is not None and settled and text is not None and is_backchannel(text):
            # the user stopped, and what they said was listening feedback: not a turn, the answer plays on
            self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason="backchannel",
                                       voiced_s=round(inp.voiced_s, 3), candidate=True))
            self._close_input(inp, reason="backchannel")

    def _user_words(self, text: str) -> tuple[list[str], list[str]]:
        """(command words, content words) of a candidate's transcript, without the words of the running answer:
        a word the assistant says may be its own echo, recognised in the user's input."""
        said = set(speech_words(self._reply.transcript.text)) if self._reply is not None else set()
        return ([w for w in command_words(text) if w not in said],
                [w for w in content_words(text) if w not in said])

    def _interrupting(self, inp: _Input) -> bool:
        """The candidate already shows it takes the turn, before the user has finished: a long utterance with
        ``barge_in_early_words`` distinct content words of the user's own. Anything shorter (commands included)
        is decided at the end of the user's speech, on the whole transcript, while the answer stays held.
        Profiles without a transcript (Freeze-Omni) interrupt on their state head's 'ss' only."""
        text = inp.user_text
        cfg = self.config
        if text is None or not text.strip() or inp.voiced_s < cfg.barge_in_early_voiced_s:
            return False
        if self._barge_in_veto(inp) is not None:
            return False
        _, content = self._user_words(text)
        return len(set(content)) >= cfg.barge_in_early_words

    def _not_a_turn(self, inp: _Input) -> str | None:
        """Why a backend 'ss' for an ordinary input must not be answered (None: answer it). A backchannel is not
        a turn when it began while the assistant spoke, nor after an answer that asked nothing (it acknowledges);
        after a question of the assistant's ("Shall I go on?" "Yeah.") it is the user's answer. A command alone
        ("Wait.", "Stop.") is not answered either ("command"; its words stay in the transcript): over an answer it
        has done what it asked once the answer stopped, and after one it asks the assistant to hold on, unless the
        assistant had asked something ("Shall I go on?" "No."). Its turn stays open for a grace in which the user
        may go on (:meth:`_may_go_on_after_command`)."""
        text = inp.user_text
        if text is None or inp.joined or not text.strip():
            return None
        if is_command_alone(text) and (inp.began_during_reply or not self._assistant_asked()):
            return "command"
        if not is_backchannel(text):
            return None
        if inp.began_during_reply:
            return "backchannel"
        return None if self._assistant_asked() else "backchannel"

    def _assistant_asked(self) -> bool:
        """The assistant's latest answer ended on a question."""
        last = next((m.get("content") or "" for m in reversed(self.history) if m.get("role") == "assistant"), "")
        return last.rstrip().endswith("?")

    def _close_input(self, inp: _Input, reason: str) -> None:
        if self._input is inp:
            self._input = None
        if inp.paused_at is not None and inp.during_reply and self._reply is not None:
            self.sink.resume()
            self.bus.emit(Playback(turn=inp.turn, paused=False, reason=reason, reply_turn=self._reply.turn))
        inp.paused_at = None
        if self._reply is None and self.state in (DuplexState.USER_SPEAKING, DuplexState.INTERRUPTED):
            self._set_state(DuplexState.LISTENING)

    def _check_timeouts(self, inp: _Input, now: float) -> None:
        cfg = self.config
        if self._ptt_held or inp.lingering is not None:
            return      # a lingering input has its own deadline
        reason = None
        if inp.offset_t is not None and now - inp.offset_t >= cfg.silence_timeout_s:
            reason = "silence_timeout"
        elif now - inp.opened_t >= cfg.max_turn_s:
            reason = "max_turn"
        if reason is None:
            return
        if inp.during_reply and self._reply is not None:
            # Only a live 'ss' may interrupt an answer; a candidate that never got one is dropped.
            self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason=reason, voiced_s=round(inp.voiced_s, 3),
                                       candidate=True))
            self._close_input(inp, reason=reason)
            return
        self._force_end(inp, reason)

    def _force_end(self, inp: _Input, reason: str) -> None:
        try:
            result = self._timed(self.backend.end_of_input, self.conv)
        except Exception as exc:
            self._fault(exc, "end_of_input", inp.turn)
            self._close_input(inp, reason="error")
            return
        self.bus.emit(StateProbs(turn=inp.turn, probs=tuple(round(float(p), 4) for p in result.probs),
                                 state=result.state, preroll=False, candidate=inp.during_reply, end_of_input=True))
        self._user_text(inp, result)
        if result.state == "cl":
            result = replace(result, state="el", final=True)
        self._decide(inp, result, forced=reason)

    def end_of_input(self) -> None:
        """The input stream ended (end of file, microphone closed): close an open user turn with the backend's
        final decision."""
        if self._input is not None:
            inp = self._input
            if inp.during_reply and self._reply is not None:
                self.bus.emit(TurnDecision(turn=inp.turn, state="el", reason="end_of_input", candidate=True,
                                           voiced_s=round(inp.voiced_s, 3)))
                self._close_input(inp, reason="end_of_input")
            else:
                self._force_end(inp, "end_of_input")

    def _restart_vad(self) -> None:
        """The next voiced run is a new onset (the chain's VAD restarts its segmentation; the engine stops counting
        the current speech as going on)."""
        self._vad_in_speech = False
        if self._source is not None:
            try:
                self._source.restart_vad()
            except Exception as exc:
                self._fault(exc, "vad", self.turn)

    # ------------------------------------------------------------------------------------------------------------
    # barge-in

    def _barge_in(self, inp: _Input, early: bool = False) -> None:
        """The candidate takes the turn: the answer stops and the candidate is listened to again from its pre-roll
        as the new user turn (or, when it resumed right after the previous turn, as that turn's continuation).
        ``early``: the user is still speaking (the transcript showed a barge-in before any decision); the turn's
        own decision comes when they have finished."""
        if inp.joins:
            self._join_previous_turn(inp)
            return
        self.bus.emit(TurnDecision(turn=inp.turn, state="ss", reason="interrupting" if early else "backend",
                                   voiced_s=round(inp.voiced_s, 3), candidate=True, barge_in=True))
        self._cut_reply(inp.turn, reason="barge_in", silent_since=inp.paused_at)
        inp.paused_at = None
        # The candidate becomes the new user turn: listened to again, from its pre-roll, on the corrected memory.
        inp.during_reply = False
        inp.user_text = inp.emitted_text = ""
        audio, inp.audio = inp.audio, []
        self._set_state(DuplexState.USER_SPEAKING)
        self._begin_listening(inp, audio)

    def _cut_reply(self, turn: int, reason: str, silent_since: float | None = None) -> str:
        """Stop the running answer now: cancel generation, flush playback, report heard/unheard text, tell the
        backend what was heard. ``silent_since``: playback was already held from then on (the decision time the
        user experienced). Returns the heard text."""
        reply = self._reply
        assert reply is not None
        decided = self.clock.now() if silent_since is None else silent_since
        reply.cancel.set()
        self._close_iterator(reply)
        report = self.sink.flush()
        played = report.played_samples.get(reply.turn, self.sink.played_samples(reply.turn))
        self._report_played(reply, decided, force=True)
        heard = reply.transcript.heard_text(played).strip()
        unheard = reply.transcript.unheard_text(played).strip()
        self._set_state(DuplexState.INTERRUPTED)
        rate = self.backend.output_rate
        self.bus.emit(Interruption(turn=turn, reply_turn=reply.turn, heard_text=heard, unheard_text=unheard,
                                   played_s=round(played / rate, 4), dropped_s=round(report.dropped_samples / rate, 4),
                                   decision_t=round(decided, 6), flush_t=round(self.clock.now(), 6), reason=reason))
        self._reply = None
        self._remember(reply.user_text, heard)
        try:
            self._timed(self.backend.interrupted, self.conv, heard)
        except Exception as exc:
            self._fault(exc, "interrupted", reply.turn)
        return heard

    # ------------------------------------------------------------------------------------------------------------
    # user controls (engine thread only, like everything else)

    def stop_reply(self, reason: str = "user") -> bool:
        """The user stopped the answer (a button, a hotkey): as a barge-in, without a new user turn.
        Returns False when no answer was running."""
        if self._reply is None:
            return False
        self._cut_reply(self.turn, reason=reason)
        self._set_state(DuplexState.USER_SPEAKING if self._input is not None else DuplexState.LISTENING)
        return True

    def submit_text(self, text: str) -> bool:
        """A typed message (the app's message box): a user turn like a spoken one, answered by voice. It takes the
        turn as a barge-in does: a running answer stops (``interruption`` with reason ``typed``) and an open spoken
        input is dropped. Returns False (with a notice) when the profile cannot take text."""
        text = " ".join(text.split())
        if not text:
            return False
        if self.conv is None:
            self.start()
        if self._input is not None:
            dropped, self._input = self._input, None
            self.bus.emit(TurnDecision(turn=dropped.turn, state="el", reason="typed",
                                       voiced_s=round(dropped.voiced_s, 3), candidate=dropped.during_reply))
        turn = self.turn + 1
        if self._reply is not None:
            self._cut_reply(turn, reason="typed")
        try:
            accepted = self._timed(self.backend.submit_text, self.conv, text)
        except Exception as exc:
            self._fault(exc, "submit_text", turn)
            return False
        if not accepted:
            self.bus.emit(InfoEvent(turn=self.turn, kind="typed_unsupported", notify=True,
                                    message="This voice model answers speech only: say it, or use the Lite profile "
                                            "to type."))
            self._set_state(DuplexState.LISTENING)
            return False
        self.turn = turn
        now = self.clock.now()
        inp = _Input(turn=turn, opened_t=now, onset_sample=self._stream_pos, during_reply=False, user_text=text)
        inp.speech_end_t = now
        self.bus.emit(UserText(turn=turn, text=text, final=True, full=text, typed=True))
        self.bus.emit(TurnDecision(turn=turn, state="ss", reason="typed", voiced_s=0.0, candidate=False))
        self._start_reply(inp)
        return True

    def set_push_to_talk(self, held: bool) -> None:
        """Push-to-talk pressed (``held``): an answer that is playing stops, and the user's turn stays open however
        long they pause; released: the turn gets its final decision at once. A release after which nothing was
        heard tells the user so (an info event, nothing else happens)."""
        if held:
            self._ptt_held = True
            self._ptt_heard = self._input is not None
            if self._reply is not None:
                self.stop_reply("push_to_talk")
            return
        if not self._ptt_held:
            return
        self._ptt_held = False
        if self._input is not None:
            self._force_end(self._input, "push_to_talk")
        elif not self._ptt_heard:
            self.bus.emit(InfoEvent(turn=self.turn, kind="ptt_nothing_heard", notify=True,
                                    message="Nothing was heard while you held the key. Hold it while you speak."))

    def restore_history(self, history: list[dict[str, str]]) -> None:
        """Continue a conversation held as text (an earlier engine's :attr:`history`, e.g. before a model reload):
        the backend's context is rebuilt from it before the next turn."""
        if self.conv is None:
            self.start()
        self.history.extend(dict(m) for m in history)
        self._conv_dirty = bool(history)

    def reset_conversation(self) -> None:
        """Forget the dialogue: stop any answer (flushed), drop the open input, start a fresh conversation."""
        if self._reply is not None:
            self._cut_reply(self.turn, reason="reset")
        self._input = None
        self.history.clear()
        self._restart_vad()
        self.conv = None
        self._conv_dirty = False
        self.start(kind="conversation_reset")

    # ------------------------------------------------------------------------------------------------------------
    # speak steps

    def _start_reply(self, inp: _Input) -> None:
        self._set_state(DuplexState.THINKING)
        cancel = threading.Event()
        now = self.clock.now()
        reply = _Reply(turn=inp.turn, cancel=cancel, iterator=None,
                       transcript=ReplyTranscript(self.backend.output_rate), decided_t=now,
                       speech_end_t=inp.speech_end_t if inp.speech_end_t is not None else now,
                       user_text=inp.user_text, input_audio=list(inp.audio), input_end=inp.end_pos)
        try:
            t0 = time.perf_counter()
            reply.iterator = iter(self._timed(self.backend.reply, self.conv, cancel))
            reply.compute_s += time.perf_counter() - t0
        except Exception as exc:
            self._fault(exc, "reply", inp.turn)
            self._remember(inp.user_text, "")
            self._set_state(DuplexState.LISTENING)
            return
        self._reply = reply

    def wants_speak_step(self) -> bool:
        reply = self._reply
        return (reply is not None and reply.iterator is not None
                and self.sink.pending_seconds() < self.config.playback_lead_s)

    def speak_step(self) -> bool:
        """One ``next()`` of the reply iterator. Returns False when there was nothing to do."""
        reply = self._reply
        if reply is None or reply.iterator is None:
            return False
        t0 = time.perf_counter()
        backend_before = self._backend_s
        self.stats.speak_steps += 1
        try:
            b0 = time.perf_counter()
            try:
                piece = next(reply.iterator)
            finally:
                dt = time.perf_counter() - b0
                self._backend_s += dt
                self.stats.backend_ms += 1000.0 * dt
                if reply.first_audio_t is None:
                    reply.compute_s += dt
                    reply.steps += 1
                if dt > self.config.slow_step_warn_s:
                    self._slow_step(reply, dt)
        except StopIteration:
            reply.iterator = None
            self._generation_done(reply)
        except Exception as exc:
            reply.iterator = None
            self._reply_failed(reply, exc)
        else:
            self._take_piece(reply, piece)
        self._chunk_overhead_s += (time.perf_counter() - t0) - (self._backend_s - backend_before)
        return True

    def _slow_step(self, reply: _Reply, seconds: float) -> None:
        """A speak step long enough to delay listening. On the wall clock the first one of a reply is reported as
        a warning (on the virtual clock compute delays nothing, and the events stay reproducible)."""
        log.debug("slow speak step: %.3f s", seconds)
        if self.clock.virtual or reply.slow_warned:
            return
        reply.slow_warned = True
        self.bus.emit(WarningEvent(turn=reply.turn, kind="slow_step", where="reply",
                                   compute_ms=round(1000 * seconds, 1),
                                   message=f"one speak step took {seconds:.2f} s (listening waited for it)"))

    def _take_piece(self, reply: _Reply, piece: ReplyPiece) -> None:
        if not isinstance(piece, ReplyPiece):
            raise TypeError(f"reply() must yield ReplyPiece, got {type(piece).__name__}")
        reply.transcript.add(piece)
        if piece.text:
            self.bus.emit(AssistantText(turn=reply.turn, text=piece.text))
        if piece.audio is not None and len(piece.audio):
            audio = np.asarray(piece.audio, dtype=np.float32).reshape(-1)
            now = self.clock.now()      # the moment the audio is handed to playback
            self.sink.enqueue(audio, self.backend.output_rate, reply.turn)
            self._last_audible_t = now
            rate = self.backend.output_rate
            self.bus.emit(AudioOut(turn=reply.turn, samples=len(audio), rate=rate,
                                   seconds=round(len(audio) / rate, 4), total=reply.transcript.samples,
                                   segment_end=bool(piece.segment_end)))
            if reply.first_audio_t is None:
                reply.first_audio_t = now
                self._set_state(DuplexState.SPEAKING)
                self._report_played(reply, now)

    def _generation_done(self, reply: _Reply) -> None:
        finish_transcript(reply.transcript)
        if reply.cancel.is_set():
            # Cancelled from outside the engine (the engine closes the iterator itself when it cuts an answer).
            self.bus.emit(ErrorEvent(turn=reply.turn, where="reply", kind="cancelled",
                                     message="the answer was cancelled before it was complete"))
        if not reply.transcript.text and not reply.transcript.samples:
            self.bus.emit(WarningEvent(turn=reply.turn, kind="empty_reply", message="the backend produced no answer"))
        self.bus.emit(GenerationDone(turn=reply.turn, text_chars=len(reply.transcript.text),
                                     audio_s=round(reply.transcript.samples / self.backend.output_rate, 4)))
        self._audio_complete(reply)
        if self.sink.pending_seconds() <= 0:
            self._finish_reply(reply)

    def _audio_complete(self, reply: _Reply) -> None:
        """No more audio comes for this answer: a sink that holds some back (a resampler's tail) plays it out,
        and an empty queue from now on is the answer's end, not a gap in it (see ``AudioSink.finish``)."""
        try:
            self.sink.finish(reply.turn)
        except Exception as exc:
            self._fault(exc, "sink", reply.turn)

    def _reply_failed(self, reply: _Reply, exc: BaseException) -> None:
        self._fault(exc, "reply", reply.turn)
        reply.failed = True
        reply.cancel.set()
        self._close_iterator(reply)
        # What is already queued still plays; memory keeps only what the user will hear.
        spoken = reply.transcript.spoken_text().strip()
        try:
            self._timed(self.backend.interrupted, self.conv, spoken)
        except Exception as exc2:
            self._fault(exc2, "interrupted", reply.turn)
        self._audio_complete(reply)
        if self.sink.pending_seconds() <= 0:
            self._finish_reply(reply)

    def _finish_reply(self, reply: _Reply) -> None:
        if self._reply is not reply:
            return
        self._report_played(reply, self.clock.now(), force=True)
        self._reply = None
        heard = reply.transcript.spoken_text().strip() if reply.failed else reply.transcript.text.strip()
        self._remember(reply.user_text, heard)
        self._emit_memory(reply.turn)
        if self._input is not None:
            # A candidate that was listened to during the answer is now an ordinary user turn.
            self._input.during_reply = False
            self._set_state(DuplexState.USER_SPEAKING)
        else:
            self._set_state(DuplexState.LISTENING)

    def _close_iterator(self, reply: _Reply) -> None:
        it, reply.iterator = reply.iterator, None
        if isinstance(it, Generator):
            try:
                self._timed(it.close)
            except Exception as exc:
                self._fault(exc, "reply", reply.turn)

    # ------------------------------------------------------------------------------------------------------------
    # memory

    def _remember(self, user_text: str, assistant_text: str) -> None:
        self.history.append({"role": "user", "content": user_text or ""})
        self.history.append({"role": "assistant", "content": assistant_text or ""})

    def _emit_memory(self, turn: int) -> None:
        """Context length and process memory after each answer (the UI's context meter; long-run checks)."""
        rss_mb = None
        if _PROCESS is not None:
            try:
                rss_mb = round(_PROCESS.memory_info().rss / 2**20, 1)
            except Exception:  # psutil can fail in odd sandboxes; the figure is optional
                rss_mb = None
        self.bus.emit(ContextUpdate(turn=turn,
                                    context_tokens=self.conv.context_tokens if self.conv is not None else None,
                                    limit=self.config.max_context_tokens, rss_mb=rss_mb))

    def _maybe_rebuild_context(self) -> None:
        conv = self.conv
        if conv is None:
            return
        cfg = self.config
        limit = cfg.max_context_tokens
        if not self._conv_dirty and conv.context_tokens < cfg.rebuild_at * limit:
            return
        before = conv.context_tokens
        history = _informative(self.history)
        target = cfg.rebuild_target * limit
        # Drop the oldest turns until the rebuilt context fits the target (estimated first, then measured).
        while history and _estimate_tokens(history) > target:
            history = history[2:]
        t0 = time.perf_counter()
        new = None
        for _ in range(6):
            try:
                new = self._timed(rebuild_context, self.backend, conv, history, self._persona)
            except Exception as exc:
                self._fault(exc, "rebuild_context", self.turn)
                new = None
                break
            if new.context_tokens <= target or not history:
                break
            history = history[2:]
        if new is None:
            try:
                new = self._timed(self.backend.new_conversation, self._persona)
                history = []
            except Exception as exc:
                self._fault(exc, "new_conversation", self.turn)
                return
        self.conv = new
        self._conv_dirty = False
        self.rebuilds += 1
        self.bus.emit(ContextRebuild(turn=self.turn, before_tokens=before, after_tokens=new.context_tokens,
                                     turns_kept=len(history) // 2, limit=limit,
                                     compute_ms=round(1000.0 * (time.perf_counter() - t0), 1)))

    # ------------------------------------------------------------------------------------------------------------
    # helpers

    def _timed(self, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            dt = time.perf_counter() - t0
            self._backend_s += dt
            self.stats.backend_ms += 1000.0 * dt

    def _set_state(self, state: DuplexState) -> None:
        if state == self.state:
            return
        prev, self.state = self.state, state
        self.bus.emit(StateChange(turn=self.turn, state=state.value, prev=prev.value))

    def _fault(self, exc: BaseException, where: str, turn: int) -> None:
        self.errors += 1
        kind = "out_of_memory" if is_out_of_memory(exc) else "backend"
        if where == "vad":
            kind = "vad"
        log.error("%s failed (%s): %s", where, kind, exc, exc_info=exc)
        if kind == "out_of_memory":
            free_cuda_cache()
        if where != "vad":
            # The model's state may be half-updated (a step may have consumed part of its cache): rebuild the
            # context from the text history between turns rather than trust it.
            self._conv_dirty = True
        self.bus.emit(ErrorEvent(turn=turn, where=where, kind=kind, message=f"{type(exc).__name__}: {exc}"))


def _informative(history) -> list[dict[str, str]]:
    """The history without exchanges where neither side has any text (nothing to carry into a rebuild)."""
    items = [dict(m) for m in history]
    out = []
    for i in range(0, len(items) - 1, 2):
        user, assistant = items[i], items[i + 1]
        if (user.get("content") or "").strip() or (assistant.get("content") or "").strip():
            out += [user, assistant]
    return out


def _estimate_tokens(history: list[dict[str, str]]) -> float:
    return sum(len(m.get("content") or "") / 3.5 + 4 for m in history)
