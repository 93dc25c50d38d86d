"""The session browser: recorded sessions (date, duration, size, path), their streams to listen to, and the event
timeline beside the transcript.

Open it from the main window::

    from app.session_browser import SessionBrowser
    dlg = SessionBrowser(root=settings.recording.folder or None, parent=self)
    dlg.show()                       # non-modal; or dlg.exec()

Everything it shows comes from ``core.session`` (no file format knowledge here). Playback is non-blocking
(sounddevice ``play``/``stop`` by default; pass ``player=`` with ``play(data, rate)`` and ``stop()`` to route it
elsewhere, e.g. to the app's output device, or in tests).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QDialog, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QMessageBox,
    QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTextBrowser, QVBoxLayout, QWidget,
)

from core.session.repair import export_session, repair_session
from core.session.store import (
    EVENTS_NAME, STREAM_FILES, TRANSCRIPT_NAME, SessionInfo, delete_session, list_sessions, read_meta, sessions_root,
)
from core.session.transcript import read_events

log = logging.getLogger(__name__)

# Event types hidden unless "all events" is ticked: many per second, little to read.
NOISY_TYPES = frozenset({"levels", "state_probs", "audio_played", "audio_out"})
MAX_TIMELINE_ROWS = 20_000
MAX_PLAY_SECONDS = 600.0      # one play reads at most this much audio into memory
STREAM_LABELS = {
    "mic_raw": "Microphone (raw)",
    "mic_clean": "Microphone (echo-cancelled)",
    "playback": "Played (speaker reference)",
    "assistant": "Assistant output (as generated)",
}
SESSION_COLUMNS = ("Date", "Duration", "Size", "Profile", "Status", "Location")
EVENT_COLUMNS = ("t (s)", "Turn", "Type", "Details")


class Player(Protocol):
    def play(self, data: np.ndarray, rate: int) -> None: ...

    def stop(self) -> None: ...


class SoundDevicePlayer:
    """Non-blocking playback (sounddevice imported on first use) on the output device called ``device`` (by name,
    as the settings store it), or the default one."""

    def __init__(self, device: str = "") -> None:
        self.device = device

    def play(self, data: np.ndarray, rate: int) -> None:
        import sounddevice as sd

        from core.settings.device_test import resolve_device

        sd.play(data, rate, blocking=False, device=resolve_device(self.device, "output"))

    def stop(self) -> None:
        try:
            import sounddevice as sd

            sd.stop()
        except Exception:  # noqa: BLE001 - nothing playing / no audio library: nothing to stop
            log.debug("sounddevice stop failed", exc_info=True)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GB"  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _details(event: dict[str, Any]) -> str:
    rest = {k: v for k, v in event.items() if k not in ("t", "turn", "type")}
    if "text" in rest and len(rest) <= 3:
        return str(rest["text"])
    return json.dumps(rest, ensure_ascii=False, default=str)[:300]


class SessionBrowser(QDialog):
    """Browse recorded sessions. Signals: ``sessionSelected(str)`` (folder path, "" when none),
    ``playbackStarted(str, float)`` (stream name, start second)."""

    sessionSelected = Signal(str)
    playbackStarted = Signal(str, float)

    def __init__(self, root: str | os.PathLike | None = None, parent: QWidget | None = None,
                 player: Player | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Recorded sessions")
        self.setModal(False)
        self._root = root
        self._player: Player = player or SoundDevicePlayer()
        self._sessions: list[SessionInfo] = []
        self._events: list[dict[str, Any]] = []
        self._meta: dict[str, Any] = {}

        self.location_label = QLabel()
        self.location_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.refresh_button = QPushButton("Refresh")
        self.open_button = QPushButton("Open folder")
        self.export_button = QPushButton("Export…")
        self.repair_button = QPushButton("Repair")
        self.delete_button = QPushButton("Delete")

        self.table = QTableWidget(0, len(SESSION_COLUMNS))
        self.table.setHorizontalHeaderLabels(SESSION_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)

        self.stream_combo = QComboBox()
        self.play_button = QPushButton("Play")
        self.stop_button = QPushButton("Stop")
        self.all_events_check = QCheckBox("All events")
        self.status_label = QLabel()
        self.status_label.setWordWrap(True)

        self.timeline = QTableWidget(0, len(EVENT_COLUMNS))
        self.timeline.setHorizontalHeaderLabels(EVENT_COLUMNS)
        self.timeline.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.timeline.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.timeline.verticalHeader().setVisible(False)
        self.timeline.horizontalHeader().setStretchLastSection(True)
        self.timeline.setToolTip("Double-click an event to play the selected stream from there")
        self.transcript = QTextBrowser()
        self.transcript.setOpenExternalLinks(False)

        top = QHBoxLayout()
        top.addWidget(self.location_label, 1)
        for b in (self.refresh_button, self.open_button, self.export_button, self.repair_button, self.delete_button):
            top.addWidget(b)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Stream:"))
        controls.addWidget(self.stream_combo, 1)
        controls.addWidget(self.play_button)
        controls.addWidget(self.stop_button)
        controls.addWidget(self.all_events_check)
        detail = QSplitter(Qt.Orientation.Horizontal)
        detail.addWidget(self.timeline)
        detail.addWidget(self.transcript)
        detail.setSizes([520, 380])
        lower = QWidget()
        lower_layout = QVBoxLayout(lower)
        lower_layout.setContentsMargins(0, 0, 0, 0)
        lower_layout.addLayout(controls)
        lower_layout.addWidget(detail, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.table)
        split.addWidget(lower)
        split.setSizes([220, 480])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(split, 1)
        layout.addWidget(self.status_label)

        self.refresh_button.clicked.connect(self.refresh)
        self.open_button.clicked.connect(self._open_folder)
        self.export_button.clicked.connect(self._export_clicked)
        self.repair_button.clicked.connect(self.repair_current)
        self.delete_button.clicked.connect(self._delete_clicked)
        self.play_button.clicked.connect(lambda: self.play_stream())
        self.stop_button.clicked.connect(self.stop_playback)
        self.all_events_check.toggled.connect(lambda _: self._fill_timeline())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.timeline.cellDoubleClicked.connect(self._timeline_double_clicked)
        self.refresh()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt name
        return QSize(1000, 720)

    # ------------------------------------------------------------------ public API

    @property
    def root(self) -> Path:
        return sessions_root(self._root)

    def set_root(self, root: str | os.PathLike | None) -> None:
        self._root = root
        self.refresh()

    def sessions(self) -> list[SessionInfo]:
        return list(self._sessions)

    def refresh(self) -> None:
        """Re-read the sessions folder (keeps the selection when the session still exists)."""
        current = self.current_session()
        self._sessions = list_sessions(self._root)
        total = sum(s.size_bytes for s in self._sessions)
        self.location_label.setText(f"{len(self._sessions)} session(s), {human_size(total)} in {self.root}")
        self.table.blockSignals(True)
        self.table.setRowCount(len(self._sessions))
        for row, info in enumerate(self._sessions):
            cells = (
                info.start_time.strftime("%Y-%m-%d %H:%M:%S") if info.start_time else "?",
                human_duration(info.duration_s), human_size(info.size_bytes), info.profile or "",
                "complete" if info.complete else "incomplete (repair?)", str(info.path),
            )
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, str(info.path))
                if col in (1, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        if current is not None and any(s.path == current for s in self._sessions):
            self.select_session(current)
        elif self._sessions:
            self.select_session(self._sessions[0].path)
        else:
            self._show_session(None)

    def select_session(self, path: str | os.PathLike) -> bool:
        path = Path(path)
        for row, info in enumerate(self._sessions):
            if info.path == path:
                self.table.selectRow(row)
                self._show_session(info.path)
                return True
        return False

    def current_session(self) -> Path | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        item = self.table.item(rows[0].row(), 0)
        return Path(item.data(Qt.ItemDataRole.UserRole)) if item else None

    def available_streams(self) -> list[str]:
        return [self.stream_combo.itemData(i) for i in range(self.stream_combo.count())]

    def play_stream(self, name: str | None = None, start_s: float = 0.0) -> bool:
        """Play a stream of the current session from ``start_s`` (session seconds for streams on the mic timeline,
        seconds into the file for the assistant stream). Non-blocking. Returns False (with a status line) when
        it cannot."""
        session = self.current_session()
        name = name or self.stream_combo.currentData()
        if session is None or not name:
            self._status("Select a session and a stream first.")
            return False
        path = session / STREAM_FILES[name]
        try:
            import soundfile as sf

            info = self._meta.get("streams", {}).get(name, {})
            with sf.SoundFile(str(path)) as f:
                rate = f.samplerate
                offset = start_s
                if info.get("on_mic_timeline") and info.get("start_t") is not None:
                    offset = start_s - float(info["start_t"])
                first = max(0, min(f.frames, int(round(offset * rate))))
                f.seek(first)
                data = f.read(frames=int(MAX_PLAY_SECONDS * rate), dtype="float32")
        except Exception as exc:  # noqa: BLE001 - a broken file is a status line, not a crash
            self._status(f"Cannot read {path.name}: {exc}")
            return False
        if len(data) == 0:
            self._status(f"{path.name}: nothing to play from {start_s:.2f} s")
            return False
        try:
            self._player.stop()
            self._player.play(data, rate)
        except Exception as exc:  # noqa: BLE001 - no output device etc.
            self._status(f"Cannot play {path.name}: {exc}")
            return False
        self._status(f"Playing {STREAM_LABELS.get(name, name)} from {start_s:.2f} s ({len(data) / rate:.1f} s)")
        self.playbackStarted.emit(name, float(start_s))
        return True

    def stop_playback(self) -> None:
        try:
            self._player.stop()
        except Exception:  # noqa: BLE001
            log.debug("stop failed", exc_info=True)
        self._status("Stopped.")

    def timeline_rows(self) -> list[tuple[str, str, str, str]]:
        """The timeline as shown (for tests and copy/paste)."""
        out = []
        for r in range(self.timeline.rowCount()):
            out.append(tuple(self.timeline.item(r, c).text() for c in range(len(EVENT_COLUMNS))))
        return out

    def export_current(self, out_zip: str | os.PathLike) -> Path | None:
        session = self.current_session()
        if session is None:
            return None
        try:
            out = export_session(session, out_zip)
        except (OSError, ValueError) as exc:
            self._status(f"Export failed: {exc}")
            return None
        self._status(f"Exported to {out}")
        return out

    def repair_current(self) -> None:
        session = self.current_session()
        if session is None:
            return
        report = repair_session(session)
        if report.problems:
            self._status("Repair: " + "; ".join(report.problems))
        else:
            self._status(f"Repair: {len(report.actions)} fix(es)" if report.actions else "Repair: nothing to fix")
        self.refresh()

    def delete_current(self) -> bool:
        session = self.current_session()
        if session is None:
            return False
        self.stop_playback()
        try:
            delete_session(session)
        except (OSError, ValueError) as exc:
            self._status(f"Delete failed: {exc}")
            return False
        self._status(f"Deleted {session}")
        self.refresh()
        return True

    # ------------------------------------------------------------------ internals

    def _status(self, text: str) -> None:
        self.status_label.setText(text)

    def _selection_changed(self) -> None:
        self._show_session(self.current_session())

    def _show_session(self, path: Path | None) -> None:
        self._events = []
        self._meta = {}
        self.stream_combo.clear()
        for b in (self.open_button, self.export_button, self.repair_button, self.delete_button, self.play_button):
            b.setEnabled(path is not None)
        if path is None:
            self.timeline.setRowCount(0)
            self.transcript.clear()
            self.sessionSelected.emit("")
            return
        self._meta = read_meta(path)
        for name, filename in STREAM_FILES.items():
            if (path / filename).exists():
                self.stream_combo.addItem(STREAM_LABELS[name], name)
        try:
            self._events = list(read_events(path / EVENTS_NAME)) if (path / EVENTS_NAME).exists() else []
        except OSError as exc:
            self._status(f"Cannot read the events: {exc}")
        self._fill_timeline()
        try:
            text = (path / TRANSCRIPT_NAME).read_text(encoding="utf-8")
        except OSError:
            text = "_No transcript._"
        self.transcript.setMarkdown(text)
        self.sessionSelected.emit(str(path))

    def _fill_timeline(self) -> None:
        show_all = self.all_events_check.isChecked()
        events = [e for e in self._events if show_all or e.get("type") not in NOISY_TYPES][:MAX_TIMELINE_ROWS]
        self.timeline.setRowCount(len(events))
        for row, ev in enumerate(events):
            try:
                t = f"{float(ev.get('t', 0.0)):.3f}"
            except (TypeError, ValueError):
                t = "?"
            cells = (t, str(ev.get("turn", "")), str(ev.get("type", "")), _details(ev))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, ev.get("t"))
                self.timeline.setItem(row, col, item)

    def _timeline_double_clicked(self, row: int, _col: int) -> None:
        item = self.timeline.item(row, 0)
        try:
            t = float(item.data(Qt.ItemDataRole.UserRole))
        except (TypeError, ValueError):
            return
        name = self.stream_combo.currentData()
        if name and not self._meta.get("streams", {}).get(name, {}).get("on_mic_timeline", name != "assistant"):
            name = "mic_raw" if "mic_raw" in self.available_streams() else name
        self.play_stream(name, t)

    def _open_folder(self) -> None:
        session = self.current_session()
        if session is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(session)))

    def _export_clicked(self) -> None:
        session = self.current_session()
        if session is None:
            return
        target, _ = QFileDialog.getSaveFileName(self, "Export session", str(Path.home() / f"{session.name}.zip"),
                                                "Zip files (*.zip)")
        if target:
            self.export_current(target)

    def _delete_clicked(self) -> None:
        session = self.current_session()
        if session is None:
            return
        answer = QMessageBox.question(self, "Delete session", f"Delete {session.name} and all its recordings?")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_current()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.stop_playback()
        super().closeEvent(event)
