"""Python's cyclic garbage collection runs in the GUI thread only, while a main window is open.

Qt objects must be destroyed in the thread they live in. Python's collector, however, runs in whichever thread
happens to allocate when a threshold is crossed (or calls ``gc.collect()``): when it finds a reference cycle that
holds a Qt wrapper (a closed window, a slot closure), the C++ destructor runs in that thread, the engine's or the
worker's, and the process can crash (seen as a segmentation fault "Garbage-collecting" in the worker thread while it
swapped models).

While a window is open, :func:`acquire` therefore switches automatic collection off and runs it from a GUI-thread
timer instead, with the interpreter's own thresholds; explicit collections requested from other threads through
:func:`core.runtime.collect_garbage` (e.g. to free a model's memory before the next one loads) are carried out in
the GUI thread, and the requesting thread waits for them (bounded, and not at all while the GUI thread is known to
be blocked waiting for that thread). :func:`release` restores the interpreter's behaviour when the last window
has closed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading

from PySide6.QtCore import QObject, QThread, QTimer, Qt, Signal, Slot

from core import runtime

log = logging.getLogger(__name__)

TICK_MS = 500
WAIT_S = 10.0


class GuiThreadGc(QObject):
    _requested = Signal(object)

    def __init__(self) -> None:
        super().__init__()
        self._requested.connect(self._run_request, Qt.ConnectionType.QueuedConnection)
        self._timer = QTimer(self)
        self._timer.setInterval(TICK_MS)
        self._timer.timeout.connect(self.tick)
        self._gui_blocked = 0
        self._lock = threading.Lock()
        self.collections = [0, 0, 0]    # per generation, for tests and diagnostics
        self.requests = 0

    def start(self) -> None:
        gc.disable()
        runtime.set_garbage_collector(self.collect)
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        runtime.set_garbage_collector(None)
        gc.enable()

    @Slot()
    def tick(self) -> None:
        """What the automatic collector would have done by now: the oldest generation over its threshold."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        generation = -1
        for g in range(3):
            if counts[g] > thresholds[g]:
                generation = g
        if generation >= 0:
            gc.collect(generation)
            self.collections[generation] += 1

    @Slot(object)
    def _run_request(self, done: threading.Event) -> None:
        try:
            gc.collect()
            self.collections[2] += 1
        finally:
            done.set()

    def gui_blocked(self) -> "_Blocked":
        """Context manager for the GUI thread while it blocks on another thread (e.g. waiting for the worker to
        stop): requests made meanwhile are skipped instead of waited for."""
        return _Blocked(self)

    def collect(self) -> bool:
        """A full collection in the GUI thread. Returns False when it could not happen now (the GUI thread is
        blocked, or did not answer within ``WAIT_S``); the timer collects later in any case."""
        self.requests += 1
        if QThread.currentThread() is self.thread():
            gc.collect()
            self.collections[2] += 1
            return True
        with self._lock:
            if self._gui_blocked:
                return False
        done = threading.Event()
        self._requested.emit(done)
        if not done.wait(WAIT_S):
            log.debug("the GUI thread did not collect garbage within %.0f s", WAIT_S)
            return False
        return True


class _Blocked:
    def __init__(self, owner: GuiThreadGc) -> None:
        self.owner = owner

    def __enter__(self) -> None:
        with self.owner._lock:
            self.owner._gui_blocked += 1

    def __exit__(self, *exc: object) -> None:
        with self.owner._lock:
            self.owner._gui_blocked -= 1


_instance: GuiThreadGc | None = None
_users = 0


def gui_blocked() -> contextlib.AbstractContextManager:
    """While the GUI thread waits (blocking) for a worker thread: that thread collects garbage itself."""
    return _instance.gui_blocked() if _instance is not None else contextlib.nullcontext()


def acquire() -> GuiThreadGc:
    """Called by each main window when it opens (in the GUI thread)."""
    global _instance, _users
    if _instance is None:
        _instance = GuiThreadGc()
        _instance.start()
    _users += 1
    return _instance


def release() -> None:
    """Called by each main window when it has closed (in the GUI thread)."""
    global _instance, _users
    _users = max(0, _users - 1)
    if _users == 0 and _instance is not None:
        _instance.stop()
        _instance.deleteLater()
        _instance = None
        gc.collect()
