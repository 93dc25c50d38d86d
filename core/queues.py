"""One bounded, thread-safe FIFO that drops its oldest item when full (a leaf module).

Used wherever a fast producer must never block on a slow consumer: engine events to the UI, audio chunks to the
engine, audio-layer notices. ``dropped`` counts what was lost, so the loss is visible instead of silent.
"""

from __future__ import annotations

import collections
import threading
from typing import Generic, Iterator, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Bounded FIFO; :meth:`put` never blocks (a full queue drops its oldest item and counts it in ``dropped``).

    :meth:`close` ends the stream: :meth:`get` then returns what is left and afterwards raises :class:`EOFError`.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._items: collections.deque[T] = collections.deque()
        self.maxsize = max(1, int(maxsize))
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Append ``item``; returns True when the queue went from empty to non-empty (a consumer may need a wake-up).
        Items put after :meth:`close` are ignored."""
        with self._cond:
            if self._closed:
                return False
            was_empty = not self._items
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()
            return was_empty

    __call__ = put

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, or None when none came within ``timeout`` seconds (``None``: wait until one comes or the
        queue is closed; ``0``: do not wait). Raises :class:`EOFError` once the queue is closed and empty."""
        with self._cond:
            if not self._items and not self._closed and (timeout is None or timeout > 0):
                self._cond.wait(timeout)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise EOFError
            return None

    def drain(self) -> list[T]:
        """Everything queued, oldest first (the queue is then empty)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            return items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.drain())
