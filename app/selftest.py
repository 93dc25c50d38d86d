"""``parley --self-test``: prove an installation (or the PyInstaller bundle) works, headless.

It imports every module of ``core`` and ``app``, opens the main window offscreen, checks that the application icon
loads from ``assets/``, loads the Lite profile when its weight packages are installed, and prints one summary line.
Exit 0 when everything that is present works.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import time

log = logging.getLogger(__name__)


def import_all(packages: tuple[str, ...] = ("core", "app")) -> tuple[int, list[str]]:
    """Import every module below ``packages``. Returns (count, failures as 'module: error')."""
    count = 0
    failures: list[str] = []
    for name in packages:
        pkg = importlib.import_module(name)
        count += 1
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{name}."):
            try:
                importlib.import_module(info.name)
                count += 1
            except Exception as exc:  # report every broken module, not only the first
                failures.append(f"{info.name}: {type(exc).__name__}: {exc}")
    return count, failures


def open_main_window() -> str:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from core.settings import load_settings

    qt_app = QApplication.instance() or QApplication(sys.argv[:1])
    # The self-test must leave the user's state alone: the settings are only read (a broken file is not moved
    # aside), and the window does not save them when it closes (it would set first_run_done).
    window = MainWindow(load_settings(keep_aside=False), persist=False)
    window.show()
    qt_app.processEvents()
    image = window.grab()
    size = f"{image.width()}x{image.height()}"
    window.close()
    if not window.wait_shut_down(30_000):
        raise RuntimeError("the main window's worker did not shut down")
    if image.isNull():
        raise RuntimeError("the main window rendered nothing")
    return size


def load_lite() -> str:
    """Load the Lite profile if its weight packages are installed; '' when they are not."""
    from core.model.lite import weights

    missing = weights.missing_packages()
    if missing:
        return f"lite profile not installed ({', '.join(p.distribution for p in missing)})"
    from core.model.lite.backend import LiteBackend

    start = time.monotonic()
    backend = LiteBackend()  # loads (and on first use caches) Whisper, SmolLM2 and the Piper voice
    try:
        conv = backend.new_conversation()
        del conv
    finally:
        backend.close()
    return f"lite profile loaded in {time.monotonic() - start:.1f} s"


def run_self_test(args: argparse.Namespace) -> int:
    from core import __version__
    from core.runtime import configure_torch_threads

    configure_torch_threads()
    problems: list[str] = []
    parts: list[str] = [f"parley {__version__}"]
    count, failures = import_all()
    parts.append(f"{count} modules imported")
    problems += failures
    try:
        parts.append(f"main window {open_main_window()} offscreen")
    except Exception as exc:
        log.debug("main window failed", exc_info=True)
        problems.append(f"main window: {type(exc).__name__}: {exc}")
    try:
        from app.desktop import check_icon

        parts.append(check_icon())
    except Exception as exc:
        problems.append(f"icon: {type(exc).__name__}: {exc}")
    try:
        parts.append(load_lite())
    except Exception as exc:
        log.debug("lite profile failed", exc_info=True)
        problems.append(f"lite profile: {type(exc).__name__}: {exc}")
    if problems:
        for problem in problems:
            print(f"self-test problem: {problem}", file=sys.stderr)
        print(f"parley self-test: FAILED ({len(problems)} problems); " + ", ".join(parts))
        return 1
    print("parley self-test: OK; " + ", ".join(parts))
    return 0
