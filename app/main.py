"""``parley`` with no subcommand: the desktop app.

Before Qt is touched, a missing display is reported in one line (and exit code 2) instead of Qt's abort. A missing
sound server or audio device does not stop the app: it opens and shows the problem with what to do.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)


def build_app():
    """The QApplication and the main window exactly as ``parley`` opens them (settings loaded, startup checks and
    the engine's start queued on the event loop). Also used by scripts/app_screenshots.py."""
    import app  # noqa: F401  (applies the PySide6 reference-count fix before Qt starts)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.desktop import apply_identity
    from app.main_window import MainWindow
    from core.log import set_speech_logging
    from core.settings import load_settings

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_identity(qt_app)       # name, icon, desktop file name (window class)
    qt_app.setStyle("Fusion")
    loaded = load_settings()
    set_speech_logging(loaded.settings.ui.log_speech or None)   # off: PARLEY_LOG_SPEECH still decides
    window = MainWindow(loaded)
    # Closing hides the window at once; the app ends when the engine has shut down behind it.
    qt_app.setQuitOnLastWindowClosed(False)
    window.shut_down.connect(qt_app.quit)
    window.show()
    first_run = not loaded.existed or not loaded.settings.ui.first_run_done
    QTimer.singleShot(0, lambda: window.run_startup_checks(first_run))
    QTimer.singleShot(0, window.start_engine)
    return qt_app, window


def run_app(args: argparse.Namespace | None = None) -> int:
    from core.doctor import display_problem

    problem = display_problem()
    if problem:
        sys.stderr.write(f"parley: {problem}\n")   # the CLI's one-line message (not a log line)
        return 2

    from PySide6.QtCore import QTimer

    qt_app, window = build_app()
    # Ctrl+C / SIGTERM close the window cleanly (settings saved, engine and audio stopped). Python runs signal
    # handlers only between bytecodes, so a timer wakes the interpreter regularly while Qt's loop runs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: QTimer.singleShot(0, window.close))
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(250)
    code = qt_app.exec()
    if not window.shutdown_worker(10_000):   # quit by other means (a session logout) while the engine ran
        log.warning("the engine did not shut down in time; leaving without it")
        logging.shutdown()
        os._exit(int(code))                  # a still running QThread must not be destroyed: abort-free exit
    log.info("the app exited with code %s", code)
    return int(code)
