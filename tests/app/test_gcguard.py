"""Garbage collection while a main window is open runs in the GUI thread only (app/gcguard.py): a reference cycle
holding a Qt object that becomes garbage while another thread allocates or asks for a collection is destroyed
in the GUI thread."""

from __future__ import annotations

import gc
import threading

import pytest
from PySide6.QtCore import QObject, QThread

from app import gcguard
from core import runtime

pytestmark = pytest.mark.ui


class _Cycle:
    """A reference cycle that holds a Qt object and notes the thread its Python side is finalised in."""

    finalised_in: list[str] = []

    def __init__(self) -> None:
        self.me = self
        self.qobj = QObject()

    def __del__(self) -> None:
        gui = QThread.currentThread() is QObject().thread() and threading.current_thread() is threading.main_thread()
        _Cycle.finalised_in.append("gui" if gui else threading.current_thread().name)


def test_collections_requested_from_other_threads_run_in_the_gui_thread(qtbot):
    _Cycle.finalised_in.clear()
    guard = gcguard.acquire()
    try:
        assert not gc.isenabled()
        _Cycle()   # garbage now, collectable only by the cyclic collector
        results: list[object] = []

        def worker() -> None:
            junk = [[i] for i in range(50_000)]   # would trigger automatic collections here if they were on
            del junk
            results.append(guard.collect())
            runtime.collect_garbage()            # what the worker and the Lite backend call

        th = threading.Thread(target=worker, name="model-worker")
        th.start()
        qtbot.waitUntil(lambda: not th.is_alive(), timeout=10_000)
        assert results == [True]
        assert _Cycle.finalised_in == ["gui"]
        assert guard.collections[2] >= 2
    finally:
        gcguard.release()
    assert gc.isenabled()


def test_while_the_gui_thread_waits_for_a_thread_its_requests_are_skipped_not_deadlocked(qtbot):
    guard = gcguard.acquire()
    try:
        out: list[bool] = []
        th = threading.Thread(target=lambda: out.append(guard.collect()))
        with guard.gui_blocked():
            th.start()
            th.join(5)        # the GUI thread blocks here, as MainWindow.shutdown_worker does
        assert out == [False]
    finally:
        gcguard.release()


def test_timer_collects_with_the_interpreters_thresholds(qtbot):
    guard = gcguard.acquire()
    try:
        before = guard.collections[0]
        junk = [[i] for i in range(5_000)]   # kept alive: the allocation count stays over generation 0's threshold
        qtbot.waitUntil(lambda: guard.collections[0] > before, timeout=5_000)
        assert len(junk) == 5_000
    finally:
        gcguard.release()
