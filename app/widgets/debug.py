"""The engineering-details panel: the figures and notices that are for engineers, not for the conversation.

Off by default (View → Engineering details); the main window puts it in a dock. It shows

* figures, by name, latest value (``set_figure("context tokens", 212)``): latency, context size, the last turn
  decision, step timings, audio counters;
* every notice with its technical text, newest last, repeats counted on one line (``add_notice``), including the
  ones that never make a banner.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QFormLayout, QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

MAX_ROWS = 500
NOTICE_COLUMNS = ("Time", "Level", "Code", "Details", "×")


class EngineeringPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("engineeringPanel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self._form = QFormLayout()
        self._form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        lay.addLayout(self._form)
        self.figures: dict[str, QLabel] = {}
        self.table = QTableWidget(0, len(NOTICE_COLUMNS), self)
        self.table.setHorizontalHeaderLabels(NOTICE_COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(True)
        header = self.table.horizontalHeader()
        for col in (0, 1, 2, 4):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Stretch)
        lay.addWidget(self.table, 1)
        self._rows: dict[tuple[str, str, str], int] = {}   # (level, code, text if no code) -> row

    def set_figure(self, name: str, value: Any) -> None:
        label = self.figures.get(name)
        if label is None:
            label = QLabel(self)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.figures[name] = label
            self._form.addRow(f"{name}:", label)
        label.setText(str(value))

    def figure(self, name: str) -> str | None:
        label = self.figures.get(name)
        return label.text() if label is not None else None

    def add_notice(self, level: str, code: str, text: str) -> None:
        """One notice; a repeat of the same code (or, without a code, the same text) updates its row: the
        latest time and text, and the count."""
        key = (level, code, "" if code else text)
        row = self._rows.get(key)
        stamp = time.strftime("%H:%M:%S")
        if row is not None:
            count = int(self.table.item(row, 4).text()) + 1
            self.table.item(row, 0).setText(stamp)
            self.table.item(row, 3).setText(text)
            self.table.item(row, 4).setText(str(count))
            return
        if self.table.rowCount() >= MAX_ROWS:
            self.table.removeRow(0)
            self._rows = {k: r - 1 for k, r in self._rows.items() if r > 0}
        row = self.table.rowCount()
        self.table.insertRow(row)
        for col, value in enumerate((stamp, level, code, text, "1")):
            self.table.setItem(row, col, QTableWidgetItem(value))
        self._rows[key] = row
        self.table.scrollToBottom()

    def notices(self) -> list[tuple[str, str, str, int]]:
        """(level, code, text, count) per row, oldest first."""
        return [(self.table.item(r, 1).text(), self.table.item(r, 2).text(), self.table.item(r, 3).text(),
                 int(self.table.item(r, 4).text())) for r in range(self.table.rowCount())]
