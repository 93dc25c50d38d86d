"""The setup check (``parley doctor`` in a window): shown on first run and from the tool bar. The checks run in
a background task; each problem is listed with what to do about it."""

from __future__ import annotations

import html
import logging

from PySide6.QtCore import Slot
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget

from app.tasks import BackgroundTask
from core.settings import Settings

log = logging.getLogger(__name__)

MARKS = {"ok": ("✔", "#2e7d32"), "warn": ("!", "#8a5a00"), "fail": ("✘", "#b3261e")}


class DoctorDialog(QDialog):
    def __init__(self, settings: Settings, parent: QWidget | None = None, first_run: bool = False) -> None:
        super().__init__(parent)
        self.setWindowTitle("Parley setup check")
        self.setMinimumSize(640, 420)
        self.settings = settings.copy()
        self.checks: list = []
        lay = QVBoxLayout(self)
        intro = "Welcome to Parley. " if first_run else ""
        self.summary = QLabel(intro + "Checking audio, display, GPU and model files…", self)
        self.summary.setWordWrap(True)
        lay.addWidget(self.summary)
        self.view = QTextBrowser(self)
        lay.addWidget(self.view, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        self.rerun = QPushButton("Check again", self)
        buttons.addButton(self.rerun, QDialogButtonBox.ButtonRole.ActionRole)
        self.rerun.clicked.connect(self.run)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        self.task: BackgroundTask | None = None
        self.run()

    def run(self) -> None:
        from core.doctor import run_checks

        if self.task is not None and self.task.running:
            return
        self.rerun.setEnabled(False)
        settings = self.settings
        self.task = BackgroundTask(lambda _t: run_checks(settings, []), "doctor", self)
        self.task.done.connect(self.show_checks)
        self.task.failed.connect(self._failed)
        self.task.finished.connect(self._finished)
        self.task.start()

    @Slot(str)
    def _failed(self, message: str) -> None:
        self.summary.setText(f"The check itself failed: {message}")

    @Slot()
    def _finished(self) -> None:
        self.rerun.setEnabled(True)

    @Slot(object)
    def show_checks(self, checks: list) -> None:
        self.checks = checks
        rows = []
        for c in checks:
            mark, color = MARKS.get(c.status, ("?", "#555"))
            row = (f"<tr><td style='color:{color};font-weight:bold;padding-right:8px'>{mark}</td>"
                   f"<td><b>{html.escape(c.name)}</b>: {html.escape(c.detail)}")
            if c.fix and c.status != "ok":
                row += f"<br><span style='color:#1f5fa8'>What to do: {html.escape(c.fix)}</span>"
            rows.append(row + "</td></tr>")
        self.view.setHtml("<table cellspacing='4'>" + "".join(rows) + "</table>")
        fails = sum(c.status == "fail" for c in checks)
        warns = sum(c.status == "warn" for c in checks)
        if fails or warns:
            self.summary.setText(f"{fails} problem(s) and {warns} warning(s) found. Parley still opens; fix them "
                                 "for the best experience.")
        else:
            self.summary.setText("Everything needed is in place.")

    def problems(self) -> list:
        return [c for c in self.checks if c.status != "ok"]
