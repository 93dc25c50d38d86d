"""Status and problem reports from the audio layer, readable by the engine and the UI from any thread.

Audio callbacks never create events: they only bump counters. The audio worker thread turns counter changes and
stream health into :class:`AudioEvent` objects and puts them on an :class:`AudioEventQueue`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger(__name__)

# Event types (the ``type`` field). ``code`` says what happened within a type.
WARNING = "warning"            # something degraded but audio goes on (device fallback, overflow, underflow)
ERROR = "error"                # audio stopped and could not be recovered
AUDIO_STATUS = "audio_status"  # life cycle: started, first_input, device_lost, reopened, stopped, aec_realigned


@dataclass
class AudioEvent:
    type: str                  # WARNING | ERROR | AUDIO_STATUS
    code: str                  # machine-readable reason, e.g. "input_overflow", "device_lost", "reopened"
    message: str = ""
    t: float = field(default_factory=time.monotonic)   # time.monotonic() when it was noticed
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "code": self.code, "message": self.message, "t": self.t}
        out.update(self.data)
        return out


class AudioEventQueue:
    """A bounded, thread-safe queue of events, plus optional listeners called synchronously on ``put``.

    Listeners run in the thread that reports the event (the audio worker), so they must be quick (a Qt signal
    emit, a queue put). A listener that raises is logged and removed. When the queue is full the oldest event is
    dropped and counted in :attr:`dropped`.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: collections.deque[AudioEvent] = collections.deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._listeners: list[Callable[[AudioEvent], None]] = []
        self.dropped = 0

    def put(self, event: AudioEvent) -> None:
        with self._cond:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append(event)
            listeners = list(self._listeners)
            self._cond.notify_all()
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the audio worker
                log.exception("audio event listener failed; removed")
                self.unsubscribe(listener)

    def emit(self, type: str, code: str, message: str = "", **data: Any) -> AudioEvent:
        event = AudioEvent(type=type, code=code, message=message, data=data)
        self.put(event)
        return event

    def get(self, timeout: float | None = None) -> AudioEvent | None:
        """The oldest event, waiting up to ``timeout`` seconds (None: forever). None when nothing came."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            return self._items.popleft() if self._items else None

    def drain(self) -> list[AudioEvent]:
        """All queued events, oldest first, without waiting."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def wait_for(self, predicate: Callable[[AudioEvent], bool], timeout: float) -> AudioEvent | None:
        """Consume events until one matches ``predicate``; None after ``timeout`` seconds. Others are discarded."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            event = self.get(timeout=left)
            if event is not None and predicate(event):
                return event

    def subscribe(self, listener: Callable[[AudioEvent], None]) -> None:
        with self._cond:
            self._listeners.append(listener)

    add_listener = subscribe   # alias

    def unsubscribe(self, listener: Callable[[AudioEvent], None]) -> None:
        with self._cond:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
