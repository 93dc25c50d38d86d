"""Typed, timestamped, JSON-serialisable engine events, and the one event bus they travel on.

In JSONL every line is an object with ``t`` (monotonic seconds since session start; in the file-driven fast mode the
virtual clock), ``turn`` (turn id) and ``type``.

There is ONE :class:`EventBus` per session. The engine's worker thread emits; any number of subscribers listen:

* synchronous callbacks (:meth:`EventBus.subscribe`) run in the emitting thread and must be quick (the JSONL writer,
  a Qt signal emit that Qt queues to the GUI thread);
* queue subscribers (:meth:`EventBus.subscribe_queue`) get a bounded queue that a consumer drains at its own pace
  (a UI timer, a test); when it is full the oldest event is dropped and counted, so a stalled consumer can never
  block the engine or grow memory.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "state",           # duplex state change: idle/listening/user_speaking/thinking/speaking/interrupted
    "vad_onset", "vad_offset",
    "state_probs",     # per-chunk probabilities: probs=[p_cl, p_ss, p_el]
    "turn_decision",   # state = cl|ss|el
    "user_text",       # text = new piece (or full partial with partial=True)
    "assistant_text",  # text = new piece
    "audio_out",       # samples handed to playback
    "audio_played",    # samples actually played
    "interruption",    # unheard_text
    "latency",         # first_audio_ms (handed to playback), first_played_ms
    "context",         # multi-turn memory: context_tokens, rebuilds
    "levels",
    "warning", "error", "info",
)

# Fields that measure the machine (compute wall-clock time, process memory), not the conversation: they differ from
# run to run even when the conversation is replayed exactly. Comparisons of event sequences leave them out.
COMPUTE_FIELDS = frozenset({"compute_ms", "wall_ms", "overhead_ms", "backend_ms", "step_ms", "rss_mb",
                            "first_audio_est_ms"})


@dataclass
class Event:
    type: str
    t: float
    turn: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"t": round(self.t, 6), "turn": self.turn, "type": self.type}
        out.update(self.data)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Event":
        d = dict(d)
        return cls(type=d.pop("type"), t=float(d.pop("t")), turn=int(d.pop("turn")), data=d)


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since session start."""


Subscriber = Callable[[Event], None]


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


class EventQueue:
    """A bounded, thread-safe event queue fed by the bus. Full: the oldest event is dropped (``dropped`` counts)."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._items: collections.deque[Event] = collections.deque()
        self._maxsize = max(1, int(maxsize))
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, event: Event) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)
            self._cond.notify()

    __call__ = put

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None after ``timeout`` seconds (never blocks forever unless timeout is None)."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def drain(self) -> list[Event]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class EventBus:
    """Thread-safe publish/subscribe for :class:`Event` s, stamped with the session clock.

    ``emit`` snapshots the subscriber list under a lock and calls each subscriber outside it, so subscribers may
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

    def subscribe_queue(self, maxsize: int = 10_000) -> EventQueue:
        queue = EventQueue(maxsize)
        self.subscribe(queue.put)
        return queue

    def unsubscribe(self, callback: Subscriber) -> None:
        with self._lock:
            self._subscribers = tuple(s for s in self._subscribers if s is not callback and s != callback)

    def now(self) -> float:
        return self.clock.now() if self.clock is not None else 0.0

    def emit(self, type: str, turn: int, t: float | None = None, **data: Any) -> Event:
        event = Event(type=type, t=self.now() if t is None else t, turn=turn, data=data)
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
    """Subscriber that writes one JSON object per line and flushes each line (a crash loses at most one event)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "w", encoding="utf-8")
        self._lock = threading.Lock()
        self.lines = 0

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock:
            if self._file.closed:
                return
            self._file.write(line)
            self._file.flush()
            self.lines += 1

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[Event]:
    """Events of a JSONL file written by :class:`JsonlWriter` (a torn last line is skipped)."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(Event.from_dict(json.loads(line)))
            except (ValueError, KeyError):
                log.warning("skipping unreadable event line in %s", path)
    return events
