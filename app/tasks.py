"""Run a short job (checksums, a download, device listing, the doctor) off the GUI thread and hear about it through
Qt signals, so dialogs never block the event loop.

``BackgroundTask(fn)``: ``fn(task)`` runs in a daemon thread; it may call ``task.report(*values)`` (delivered as
``progress``) and should stop soon after ``task.cancelled`` is true. ``done(result)`` or ``failed(message)`` is
delivered in the GUI thread when it ends.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, Signal, Slot

log = logging.getLogger(__name__)

_live: set["BackgroundTask"] = set()   # keep running tasks alive even if their dialog is gone


class BackgroundTask(QObject):
    progress = Signal(object)
    done = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, fn: Callable[["BackgroundTask"], Any], name: str = "task",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.name = name
        self.cancel_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.running = False

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def cancel(self) -> None:
        self.cancel_event.set()

    def report(self, value: Any) -> None:
        self.progress.emit(value)

    def start(self) -> "BackgroundTask":
        self.running = True
        _live.add(self)
        self.finished.connect(self._forget)   # runs in the GUI thread (this object's thread)
        self._thread = threading.Thread(target=self._run, name=f"parley-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            result = self._fn(self)
        except Exception as exc:
            log.debug("%s failed:\n%s", self.name, traceback.format_exc())
            self.running = False
            self.failed.emit(str(exc) or type(exc).__name__)
        else:
            self.running = False
            self.done.emit(result)
        finally:
            self.running = False
            self.finished.emit()

    @Slot()
    def _forget(self) -> None:
        _live.discard(self)

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()
