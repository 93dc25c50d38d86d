"""Status and problem reports from the audio layer, readable by the engine and the UI from any thread.

Audio callbacks never create events: they only bump counters. The audio worker thread turns counter changes and
stream health into :class:`AudioEvent` objects and puts them on an :class:`AudioEventQueue`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from core.queues import DropOldestQueue

log = logging.getLogger(__name__)

# Event types (the ``type`` field). ``code`` says what happened within a type.
WARNING = "warning"            # something degraded but audio goes on (device fallback, overflow, underflow)
ERROR = "error"                # audio stopped and could not be recovered
AUDIO_STATUS = "audio_status"  # life cycle: started, first_input, ready_sound, device_lost, reopened, stopped, aec_realigned


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


class AudioEventQueue(DropOldestQueue[AudioEvent]):
    """A bounded, thread-safe queue of events (the oldest is dropped when it is full, counted in ``dropped``), plus
    optional listeners called synchronously on ``put``.

    Listeners run in the thread that reports the event (the audio worker), so they must be quick (a Qt signal
    emit, a queue put). A listener that raises is logged and removed.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        super().__init__(maxlen)
        self._listeners: list[Callable[[AudioEvent], None]] = []
        self._listeners_lock = threading.Lock()

    def put(self, event: AudioEvent) -> bool:
        was_empty = super().put(event)
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a broken listener must not break the audio worker
                log.exception("audio event listener failed; removed")
                self.unsubscribe(listener)
        return was_empty

    def emit(self, type: str, code: str, message: str = "", **data: Any) -> AudioEvent:
        event = AudioEvent(type=type, code=code, message=message, data=data)
        self.put(event)
        return event

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
        with self._listeners_lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[AudioEvent], None]) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
