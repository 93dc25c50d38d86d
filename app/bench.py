"""``parley bench gui``: how late the window's event loop runs while another thread is busy in Python.

The engine's threads run Python between their torch/onnxruntime calls. With CPython's default GIL switch interval
(5 ms) the GUI thread can wait that long for the GIL again and again, and the window stutters; the main window
therefore lowers the interval (``GUI_SWITCH_INTERVAL_S``). This benchmark measures what that buys: a real main
window (offscreen when there is no display, settings in a temporary folder, no model loaded) renders the events a
busy engine publishes (levels every 10 ms, state probabilities every 160 ms) from a thread that never leaves the
interpreter, while a 10 ms ``QTimer`` on the GUI thread records how late each tick comes. It runs once with the
interpreter's default interval and once with the window's, and prints one JSON object.

It is a benchmark, not a test: the figures depend on the machine and its load (docs/benchmarks.md has measured
ones). The tests check that the window sets the interval and renders beside such a thread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from typing import Any

DEFAULT_SWITCH_INTERVAL_S = 0.005     # CPython's default


class LatenessProbe:
    """A 10 ms ``QTimer`` on the GUI thread and how late each of its ticks came (ms)."""

    INTERVAL_MS = 10

    def __init__(self) -> None:
        from PySide6.QtCore import QTimer

        self.lateness_ms: list[float] = []
        self._last = time.perf_counter()
        self._timer = QTimer()
        self._timer.setInterval(self.INTERVAL_MS)
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness_ms.append((now - self._last) * 1000 - self.INTERVAL_MS)
        self._last = now

    def start(self) -> None:
        self._last = time.perf_counter()
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    def figures(self) -> dict[str, Any]:
        """Ticks and lateness (the first tick excluded: it measures the start, not the loop)."""
        late = sorted(self.lateness_ms[1:])
        if not late:
            return {"ticks": len(self.lateness_ms)}
        return {"ticks": len(self.lateness_ms), "lateness_ms_p50": round(late[len(late) // 2], 1),
                "lateness_ms_p99": round(late[min(len(late) - 1, int(len(late) * 0.99))], 1),
                "lateness_ms_max": round(late[-1], 1), "ticks_over_50ms": sum(1 for x in late if x > 50)}

    def summary(self) -> str:
        f = self.figures()
        if "lateness_ms_max" not in f:
            return f"{f['ticks']} ticks"
        return (f"max {f['lateness_ms_max']:.1f} ms, p99 {f['lateness_ms_p99']:.1f} ms, "
                f"{f['ticks']} ticks")


class BusyPublisher:
    """A thread that stays in the interpreter and publishes engine-rate events on ``bus`` until stopped."""

    def __init__(self, bus) -> None:
        self.bus = bus
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parley-bench-busy", daemon=True)
        self.published = 0

    def _run(self) -> None:
        from core.engine.events import MeterLevels, StateProbs

        x = 0
        last_levels = last_probs = time.perf_counter()
        while not self._stop.is_set():
            for i in range(2000):
                x += i * i
            now = time.perf_counter()
            if now - last_levels > 0.01:
                last_levels = now
                self.bus.emit(MeterLevels(mic_db=-30.0, out_db=-20.0))
                self.published += 1
            if now - last_probs > 0.16:
                last_probs = now
                self.bus.emit(StateProbs(probs=(0.5, 0.3, 0.2)))
                self.published += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def measure(window, seconds: float, wait) -> dict[str, Any]:
    """Run the busy publisher beside ``window`` for ``seconds`` and return the probe's figures. ``wait(ms)`` runs
    the Qt event loop for that long (``qtbot.wait`` in tests, a local event loop here)."""
    from core.engine.events import EventBus

    bus = EventBus()
    sub = bus.subscribe(window.worker._on_event)
    busy = BusyPublisher(bus)
    probe = LatenessProbe()
    busy.start()
    try:
        wait(200)                # steady state: the thread runs and the window has drawn its first events
        probe.start()
        wait(int(seconds * 1000))
    finally:
        probe.stop()
        busy.stop()
        sub.close()
    return {"switch_interval_s": sys.getswitchinterval(), "seconds": seconds, "events_published": busy.published,
            **probe.figures()}


def _wait_ms(ms: int) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def run_gui_bench(args: argparse.Namespace) -> int:
    seconds = float(getattr(args, "seconds", 3.0))
    if not 0.5 <= seconds <= 600:
        from core.errors import UserError

        raise UserError(f"--seconds must be between 0.5 and 600, not {seconds:g}")
    saved = {k: os.environ.get(k) for k in ("PARLEY_CONFIG_DIR", "PARLEY_DATA_DIR")}
    with tempfile.TemporaryDirectory(prefix="parley-bench-gui-") as tmp:
        # the window must not read or write the user's settings, geometry or sessions
        os.environ["PARLEY_CONFIG_DIR"] = os.path.join(tmp, "config")
        os.environ["PARLEY_DATA_DIR"] = os.path.join(tmp, "data")
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        import app  # noqa: F401  (the PySide6 reference-count fix, before Qt starts)
        from PySide6.QtWidgets import QApplication

        from app.main_window import GUI_SWITCH_INTERVAL_S, MainWindow
        from core.settings import Settings

        qt_app = QApplication.instance() or QApplication(sys.argv[:1])
        before = sys.getswitchinterval()
        window = MainWindow(Settings(), persist=False)
        window.resize(1000, 640)
        window.show()
        runs = []
        try:
            for interval in (DEFAULT_SWITCH_INTERVAL_S, GUI_SWITCH_INTERVAL_S):
                sys.setswitchinterval(interval)
                runs.append(measure(window, seconds, _wait_ms))
        finally:
            sys.setswitchinterval(before)
            window.close()
            window.wait_shut_down(60_000)
            qt_app.processEvents()
            for k, v in saved.items():      # the folders are gone: nothing after this may look there
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    out = {"bench": "gui", "platform": qt_app.platformName(), "cpus": os.cpu_count(),
           "window_switch_interval_s": GUI_SWITCH_INTERVAL_S, "runs": runs}
    print(json.dumps(out))
    return 0
