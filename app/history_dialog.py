"""The History dialog: earlier conversations (text only, from :mod:`core.history`), newest first; one of them reopened
read-only in a transcript view; export as Markdown or text; delete one or all.

Open it from the main window (History… / Ctrl+H)::

    dlg = HistoryDialog(settings, parent=window)
    dlg.show()
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtWidgets import (
    QDialog, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMessageBox, QPushButton, QSplitter,
    QVBoxLayout, QWidget,
)

from app.widgets.theme import PALETTE_EVENTS, restyle_tree
from app.widgets.transcript import EXPORT_FILTERS, TranscriptView
from core.history import Conversation, HistoryStore, export

log = logging.getLogger(__name__)


def describe(conv: Conversation) -> str:
    """One line of the list: when, how long, the first thing said."""
    when = time.strftime("%a %d %b %Y, %H:%M", time.localtime(conv.started))
    n = len(conv.turns)
    return f"{when} · {n} exchange{'s' if n != 1 else ''}\n{conv.title}"


class HistoryDialog(QDialog):
    changed = Signal()        # something was deleted

    def __init__(self, settings: Any, parent: QWidget | None = None, store: HistoryStore | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Conversation history")
        self.setModal(False)
        self.store = store or HistoryStore.from_settings(settings)
        self._conversations: list[Conversation] = []

        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.list = QListWidget(self)
        self.list.setAlternatingRowColors(True)
        self.list.setWordWrap(True)
        self.list.setSpacing(3)
        self.list.currentRowChanged.connect(self._show_row)
        self.view = TranscriptView(self)
        self.view.read_only = True
        self.view.set_placeholder("Choose a conversation on the left.")

        self.export_button = QPushButton("Export…", self)
        self.delete_button = QPushButton("Delete", self)
        self.delete_all_button = QPushButton("Delete all…", self)
        self.close_button = QPushButton("Close", self)
        self.export_button.clicked.connect(self._export_clicked)
        self.delete_button.clicked.connect(lambda: self.delete_current(confirm=True))
        self.delete_all_button.clicked.connect(lambda: self.delete_all(confirm=True))
        self.close_button.clicked.connect(self.close)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.list)
        splitter.addWidget(self.view)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        buttons = QHBoxLayout()
        for b in (self.export_button, self.delete_button, self.delete_all_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.status)
        lay.addWidget(splitter, 1)
        lay.addLayout(buttons)
        self.keep_note = "" if self.store.keep else (
            "History is off (Settings → Recording): new conversations are not kept. ")
        self.refresh()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(980, 620)

    def changeEvent(self, ev: QEvent) -> None:  # noqa: N802
        super().changeEvent(ev)
        if ev.type() in PALETTE_EVENTS:
            restyle_tree(self)

    # -- contents ----------------------------------------------------------------------------------------------

    def conversations(self) -> list[Conversation]:
        return list(self._conversations)

    def refresh(self) -> None:
        current = self.current()
        self._conversations = self.store.list()
        self.list.blockSignals(True)
        self.list.clear()
        for conv in self._conversations:
            item = QListWidgetItem(describe(conv))
            item.setData(Qt.ItemDataRole.UserRole, conv.id)
            item.setToolTip(str(conv.path) if conv.path else "")
            self.list.addItem(item)
        self.list.blockSignals(False)
        n = len(self._conversations)
        text = self.keep_note + (f"{n} conversation{'s' if n != 1 else ''} in {self.store.root}" if n
                                 else "No conversations kept yet.")
        if self.store.warnings:
            text += f"\n{len(self.store.warnings)} file(s) could not be read and are left as they are: " + \
                "; ".join(self.store.warnings)
        self.status.setText(text)
        ids = [c.id for c in self._conversations]
        row = ids.index(current.id) if current is not None and current.id in ids else (0 if ids else -1)
        self.list.setCurrentRow(row)
        self._show_row(row)

    def select(self, conv_id: str) -> bool:
        for row, conv in enumerate(self._conversations):
            if conv.id == conv_id:
                self.list.setCurrentRow(row)
                return True
        return False

    def current(self) -> Conversation | None:
        row = self.list.currentRow() if hasattr(self, "list") else -1
        return self._conversations[row] if 0 <= row < len(self._conversations) else None

    def _show_row(self, row: int) -> None:
        conv = self._conversations[row] if 0 <= row < len(self._conversations) else None
        for b in (self.export_button, self.delete_button):
            b.setEnabled(conv is not None)
        self.delete_all_button.setEnabled(bool(self._conversations))
        if conv is None:
            self.view.clear()
            return
        self.view.show_conversation(conv, read_only=True)

    # -- actions -----------------------------------------------------------------------------------------------

    def _confirm(self, question: str) -> bool:
        answer = QMessageBox.question(self, "Conversation history", question,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def delete_current(self, confirm: bool = False) -> bool:
        conv = self.current()
        if conv is None:
            return False
        if confirm and not self._confirm(f"Delete the conversation of {describe(conv).splitlines()[0]}?"):
            return False
        ok = self.store.delete(conv.id)
        self.refresh()
        self.changed.emit()
        return ok

    def delete_all(self, confirm: bool = False) -> int:
        if not self._conversations:
            return 0
        if confirm and not self._confirm(f"Delete all {len(self._conversations)} conversations? This cannot be "
                                         "undone."):
            return 0
        n = self.store.delete_all()
        self.refresh()
        self.changed.emit()
        return n

    def export_current(self, path: str | Path, fmt: str | None = None) -> Path | None:
        conv = self.current()
        if conv is None:
            return None
        return export(conv, path, fmt)

    def _export_clicked(self) -> None:
        conv = self.current()
        if conv is None:
            return
        start = str(Path.home() / time.strftime("parley-conversation-%Y-%m-%d_%H-%M.md",
                                                time.localtime(conv.started)))
        path, chosen = QFileDialog.getSaveFileName(self, "Export the conversation", start, EXPORT_FILTERS)
        if not path:
            return
        fmt = "text" if chosen.startswith("Plain") and not path.lower().endswith(".md") else None
        try:
            out = self.export_current(path, fmt)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"The conversation was not exported: {exc}")
            return
        self.status.setText(f"Exported to {out}")
