"""Typed, timestamped engine events, and the one event bus they travel on.

Every event is a frozen dataclass with named, typed fields (the classes below). In JSONL (``events.jsonl`` of a
session, ``parley chat --events``) every line is an object with ``t`` (seconds since session start on the session
clock: the wall clock live, a virtual clock in the file-driven fast mode), ``turn`` (turn id), ``type`` and the
event's fields; fields that are ``None`` are left out. :func:`event_from_dict` reads that form back, tolerantly:
missing fields take their defaults and fields this version does not know are kept in ``extra`` (and written back), so
sessions recorded by older or newer versions still load, replay and summarise.

There is ONE :class:`EventBus` per session. The engine's worker thread emits; any number of subscribers listen:

* synchronous callbacks (:meth:`EventBus.subscribe`) run in the emitting thread and must be quick (the JSONL writer,
  the session recorder, the app's worker that batches events for the GUI thread);
* queue subscribers (:meth:`EventBus.subscribe_queue`) get a bounded :class:`~core.queues.DropOldestQueue` that a
  consumer drains at its own pace (a test, a UI timer): a stalled consumer never blocks the engine or grows memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol, TypeVar

from core.queues import DropOldestQueue

log = logging.getLogger(__name__)

# Fields that measure the machine (compute wall-clock time, process memory), not the conversation: they differ from
# run to run even when the conversation is replayed exactly. Comparisons of event sequences leave them out.
COMPUTE_FIELDS = frozenset({"compute_ms", "wall_ms", "overhead_ms", "backend_ms", "step_ms", "rss_mb",
                            "first_audio_est_ms", "eta_s"})


@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event. ``t`` is stamped by the bus when left ``None``."""

    TYPE: ClassVar[str] = ""
    KIND: ClassVar[str | None] = None      # the ``kind`` value that selects this class among one type's classes

    t: float | None = None
    turn: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def type(self) -> str:
        return self.TYPE

    def fields(self) -> dict[str, Any]:
        """The event's own fields (not ``t``/``turn``/``extra``), ``None`` values left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("t", "turn", "extra"):
                continue
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(float(self.t or 0.0), 6), "turn": int(self.turn), "type": self.TYPE}
        out.update(self.fields())
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=_json_default)

    def get(self, name: str, default: Any = None) -> Any:
        """A field by name, also one this version does not know (kept in ``extra``)."""
        if name in ("t", "turn", "type"):
            return getattr(self, name)
        if any(f.name == name for f in dataclasses.fields(self)):
            value = getattr(self, name)
            return default if value is None else value
        return self.extra.get(name, default)


# ---------------------------------------------------------------------------------------------------------------
# the duplex state and the user's side


@dataclass(frozen=True, kw_only=True)
class StateChange(Event):
    """The duplex state changed: idle / listening / user_speaking / thinking / speaking / interrupted."""

    TYPE = "state"
    state: str = ""
    prev: str = ""


@dataclass(frozen=True, kw_only=True)
class VadOnset(Event):
    """Speech started (``at``: seconds on the input stream; ``clock_at``: the same instant on the session clock, which
    the stream lags live by the time before the first captured chunk; equal in file mode)."""

    TYPE = "vad_onset"
    at: float = 0.0
    clock_at: float | None = None
    prob: float = 0.0
    during_reply: bool | None = None     # the onset came while an answer was alive (a barge-in candidate)
    reopened: bool | None = None         # speech resumed inside an input that was already open


@dataclass(frozen=True, kw_only=True)
class VadOffset(Event):
    TYPE = "vad_offset"
    at: float = 0.0
    prob: float = 0.0


@dataclass(frozen=True, kw_only=True)
class VadLevel(Event):
    """Per input chunk: the highest speech probability in it and whether the assistant was audible."""

    TYPE = "levels"
    vad: float = 0.0
    assistant_audible: bool = False


@dataclass(frozen=True, kw_only=True)
class StateProbs(Event):
    """The backend's turn-state probabilities for one listen step: (keep listening, answer now, ignore)."""

    TYPE = "state_probs"
    probs: tuple[float, ...] = (0.0, 0.0, 0.0)
    state: str = "cl"
    preroll: bool = False                # a chunk of the pre-roll (its decision does not count)
    candidate: bool = False              # listened to during an answer (a barge-in candidate)
    end_of_input: bool | None = None     # the forced final decision of an input


@dataclass(frozen=True, kw_only=True)
class TurnDecision(Event):
    """How an open input ended: ``ss`` answer (or barge in), ``el`` ignore."""

    TYPE = "turn_decision"
    state: str = "el"
    reason: str = "backend"              # backend | silence_timeout | max_turn | end_of_input | push_to_talk |
                                         # too_short | too_few_words | backchannel | unsure | ...
    voiced_s: float = 0.0
    candidate: bool = False
    backend_state: str | None = None     # what the backend said when the engine overrode it
    barge_in: bool | None = None


@dataclass(frozen=True, kw_only=True)
class UserText(Event):
    """The user's transcript: ``partial`` carries the whole hypothesis so far (it replaces); otherwise ``text`` is a
    new piece appended to it. ``final``: the transcript is final (``full`` then holds all of it)."""

    TYPE = "user_text"
    text: str = ""
    partial: bool | None = None
    final: bool = False
    candidate: bool = False
    full: str | None = None
    typed: bool | None = None            # typed in the app's message box, not spoken


# ---------------------------------------------------------------------------------------------------------------
# the assistant's side


@dataclass(frozen=True, kw_only=True)
class AssistantText(Event):
    TYPE = "assistant_text"
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class AudioOut(Event):
    """Answer audio handed to playback."""

    TYPE = "audio_out"
    samples: int = 0
    rate: int = 0
    seconds: float = 0.0
    total: int = 0
    segment_end: bool = False


@dataclass(frozen=True, kw_only=True)
class AudioPlayed(Event):
    """Answer audio actually played (reported every ~100 ms of audio)."""

    TYPE = "audio_played"
    samples: int = 0
    total: int = 0
    rate: int = 0


@dataclass(frozen=True, kw_only=True)
class Interruption(Event):
    """An answer was cut off (emitted on the interrupting turn; ``reply_turn`` names the cut answer)."""

    TYPE = "interruption"
    reply_turn: int = 0
    heard_text: str = ""
    unheard_text: str = ""
    played_s: float = 0.0
    dropped_s: float = 0.0
    decision_t: float = 0.0
    flush_t: float = 0.0
    reason: str = "barge_in"             # barge_in | user | push_to_talk | reset | typed


@dataclass(frozen=True, kw_only=True)
class Playback(Event):
    """The answer's playback was held (the user started to speak over it) or plays on (it was not a barge-in)."""

    TYPE = "playback"
    paused: bool = False
    reason: str = ""                     # user_speaking | backchannel | not_a_turn | ...
    reply_turn: int = 0


@dataclass(frozen=True, kw_only=True)
class Latency(Event):
    """An answer's latency, measured from the end of the user's speech (its capture time)."""

    TYPE = "latency"
    first_audio_ms: float = 0.0          # first audio handed to playback
    first_played_ms: float = 0.0         # first audio actually played
    decision_ms: float = 0.0             # the turn decision
    compute_ms: float = 0.0              # backend compute until the first audio
    steps_to_first_audio: int = 0
    first_audio_est_ms: float = 0.0      # virtual clock: decision + compute (what a real-time run would see)
    virtual_clock: bool = False


@dataclass(frozen=True, kw_only=True)
class GenerationDone(Event):
    TYPE = "info"
    KIND = "generation_done"
    kind: str = "generation_done"
    text_chars: int = 0
    audio_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class SessionStart(Event):
    """A conversation started (``kind``: session_start, or conversation_reset after New conversation)."""

    TYPE = "info"
    KIND = "session_start"
    kind: str = "session_start"
    profile: str = ""
    output_rate: int = 0
    context_tokens: int = 0
    config: Mapping[str, Any] | None = None
    compute_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class ContextUpdate(Event):
    """The multi-turn memory after an answer (the UI's context meter, long-run memory checks)."""

    TYPE = "context"
    KIND = "turn_end"
    kind: str = "turn_end"
    context_tokens: int | None = None
    limit: int | None = None
    rss_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class ContextRebuild(Event):
    TYPE = "context"
    KIND = "rebuild"
    kind: str = "rebuild"
    before_tokens: int = 0
    after_tokens: int = 0
    turns_kept: int = 0
    limit: int = 0
    compute_ms: float | None = None


# ---------------------------------------------------------------------------------------------------------------
# notices, progress, meters


@dataclass(frozen=True, kw_only=True)
class InfoEvent(Event):
    """Something the user may be told (``notify``) or that only the log and the session keep."""

    TYPE = "info"
    kind: str | None = None
    message: str = ""
    notify: bool | None = None
    source: str | None = None
    path: str | None = None
    seconds: float | None = None         # how long what it announces lasts (``audio_ready``: the ready sound)


@dataclass(frozen=True, kw_only=True)
class WarningEvent(Event):
    """A problem that did not stop anything. ``kind`` (engine) / ``code`` (audio layer, recorder) says which."""

    TYPE = "warning"
    kind: str | None = None
    code: str | None = None
    source: str | None = None            # engine (None) | audio | session | settings | model
    where: str | None = None
    message: str = ""
    path: str | None = None
    compute_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class ErrorEvent(Event):
    """A failure: a step of the model, the audio device, the engine loop. The conversation goes on if it can."""

    TYPE = "error"
    kind: str | None = None              # backend | out_of_memory | vad | crash | cancelled | ...
    code: str | None = None
    source: str | None = None
    where: str | None = None
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Progress(Event):
    """A long step (loading, converting a model once) moved on. ``fraction`` None: no estimate yet."""

    TYPE = "progress"
    step: str = ""
    fraction: float | None = None
    message: str = ""
    eta_s: float | None = None
    done: bool = False


@dataclass(frozen=True, kw_only=True)
class MeterLevels(Event):
    """Meter levels for the UI (dBFS), about every 50 ms. Never recorded: they are not part of the conversation."""

    TYPE = "meter"
    mic_db: float = -120.0
    clean_db: float = -120.0
    out_db: float = -120.0
    vad: float = 0.0
    muted: bool = False


EVENT_CLASSES: tuple[type[Event], ...] = (
    StateChange, VadOnset, VadOffset, VadLevel, StateProbs, TurnDecision, UserText, AssistantText, AudioOut,
    AudioPlayed, Interruption, Playback, Latency, GenerationDone, SessionStart, ContextUpdate, ContextRebuild, InfoEvent,
    WarningEvent, ErrorEvent, Progress, MeterLevels,
)
EVENT_TYPES: tuple[str, ...] = tuple(dict.fromkeys(c.TYPE for c in EVENT_CLASSES))

_BY_TYPE: dict[str, type[Event]] = {}
_BY_KIND: dict[tuple[str, str], type[Event]] = {}
for _cls in EVENT_CLASSES:
    if _cls.KIND is not None:
        _BY_KIND[(_cls.TYPE, _cls.KIND)] = _cls
    else:
        _BY_TYPE.setdefault(_cls.TYPE, _cls)
_BY_KIND[("info", "conversation_reset")] = SessionStart
_BY_TYPE.setdefault("context", ContextUpdate)


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(Event):
    """An event type this version does not know (from a newer version's session): kept, written back as it was."""

    type_name: str = ""

    @property
    def type(self) -> str:
        return self.type_name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(float(self.t or 0.0), 6), "turn": int(self.turn), "type": self.type_name}
        out.update(self.extra)
        return out


def event_class(type_name: str, kind: Any = None) -> type[Event] | None:
    if isinstance(kind, str) and (type_name, kind) in _BY_KIND:
        return _BY_KIND[(type_name, kind)]
    return _BY_TYPE.get(type_name)


def event_from_dict(d: Mapping[str, Any]) -> Event:
    """The event of one JSONL object. Raises ValueError when ``type``/``t``/``turn`` are missing or malformed."""
    try:
        type_name = str(d["type"])
        t = float(d.get("t", 0.0))
        turn = int(d.get("turn", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an event: {exc}") from exc
    if not math.isfinite(t):
        raise ValueError("not an event: t is not finite")
    cls = event_class(type_name, d.get("kind"))
    rest = {k: v for k, v in d.items() if k not in ("t", "turn", "type")}
    if cls is None:
        return UnknownEvent(t=t, turn=turn, type_name=type_name, extra=rest)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("t", "turn", "extra")}
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in rest.items():
        f = known.get(key)
        if f is None:
            extra[key] = value
            continue
        try:
            kwargs[key] = _coerce(f, value)
        except (TypeError, ValueError):
            extra[key] = value
    return cls(t=t, turn=turn, extra=extra, **kwargs)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """A JSON value for a field, converted to the field's declared type (lists become tuples)."""
    hint = str(f.type)
    if value is None:
        return None
    if hint.startswith("tuple"):
        return tuple(float(x) for x in value)
    if hint.startswith("bool"):
        return bool(value)
    if hint.startswith("int"):
        return int(value)
    if hint.startswith("float"):
        return float(value)
    if hint.startswith("str"):
        return str(value)
    return value


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# the bus


class Clock(Protocol):
    virtual: bool      # True: a virtual clock driven by the input (compute time is not on it)

    def now(self) -> float:
        """Seconds since session start."""


Subscriber = Callable[[Event], None]
E = TypeVar("E", bound=Event)


class Subscription:
    """Handle returned by :meth:`EventBus.subscribe`; ``close()`` unsubscribes (idempotent)."""

    def __init__(self, bus: "EventBus", callback: Subscriber) -> None:
        self._bus = bus
        self.callback = callback

    def close(self) -> None:
        self._bus.unsubscribe(self.callback)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


EventQueue = DropOldestQueue


class EventBus:
    """Thread-safe publish/subscribe for :class:`Event` s, stamped with the session clock.

    ``publish`` snapshots the subscriber list and calls each subscriber outside any lock, so subscribers may
    (un)subscribe from a callback. A subscriber that raises is logged and kept; it never breaks the engine.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()
        self.clock = clock
        self.emitted = 0

    def subscribe(self, callback: Subscriber) -> Subscription:
        with self._lock:
            self._subscribers = self._subscribers + (callback,)
        return Subscription(self, callback)

    def subscribe_queue(self, maxsize: int = 10_000) -> DropOldestQueue[Event]:
        queue: DropOldestQueue[Event] = DropOldestQueue(maxsize)
        self.subscribe(queue.put)
        return queue

    def unsubscribe(self, callback: Subscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not callback and s != callback)

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else 0.0

    def emit(self, event: E) -> E:
        """Stamp ``event`` with the clock when its ``t`` is None, publish it and return it (as published)."""
        if event.t is None:
            event = dataclasses.replace(event, t=self.now())
        self.publish(event)
        return event

    def publish(self, event: Event) -> None:
        subscribers = self._subscribers  # tuple swap is atomic; no lock needed to read it
        self.emitted += 1
        for callback in subscribers:
            try:
                callback(event)
            except Exception:  # a broken subscriber must not stop the engine
                log.exception("event subscriber %r failed on %s", callback, event.type)


class JsonlWriter:
    """Subscriber that writes one JSON object per line and flushes each line (a crash loses at most one event).

    The first write failure (disk full, a folder removed) stops the writer: it is logged once, ``error`` says why,
    and later events are dropped instead of raising in the engine's thread on every event."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0
        self.error: str | None = None

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._file.closed or self.error is not None:
                return
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as exc:
                self.error = f"writing {self.path} failed: {exc.strerror or exc}"
                log.error("%s; no more events are written there", self.error)
                return
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                try:
                    self._file.close()
                except OSError as exc:
                    self.error = self.error or f"closing {self.path} failed: {exc.strerror or exc}"

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[Event]:
    """Events of a JSONL file written by :class:`JsonlWriter` (a torn or unreadable line is skipped, logged)."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                events.append(event_from_dict(obj))
            except ValueError:
                log.warning("%s:%d: unreadable event line skipped", path, lineno)
    return events
