"""The conversation transcript: one entry per side of each turn, with times, live partial text, the per-turn
latency on assistant entries, and the part of an answer the user never heard shown struck through and faded."""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

log = logging.getLogger(__name__)

USER_COLOR = "#1f5fa8"
ASSISTANT_COLOR = "#6a3fa0"
UNHEARD_COLOR = "#9a9a9a"


@dataclass
class TurnText:
    """What the transcript knows of one side of one turn."""

    role: str                          # "user" | "assistant"
    turn: int
    wall: float = field(default_factory=time.time)
    committed: str = ""                # user: transcript so far; assistant: all generated text
    final: bool = False                # user: the transcript is final (else shown as live, in italics)
    unheard: str = ""                  # assistant: generated but never played (interruption)
    interrupted: bool = False
    latency_ms: float | None = None    # assistant: end of user speech -> first audio

    @property
    def text(self) -> str:
        return self.committed.strip()

    @property
    def heard(self) -> str:
        if self.unheard and self.committed.endswith(self.unheard):
            return self.committed[: len(self.committed) - len(self.unheard)]
        return self.committed


class TurnEntry(QFrame):
    """One bubble: a header line (who, time, latency) and the text."""

    def __init__(self, data: TurnText, persona: str = "Parley", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.persona = persona
        self.setObjectName(f"{data.role}Entry")
        self.setFrameShape(QFrame.Shape.NoFrame)
        color = USER_COLOR if data.role == "user" else ASSISTANT_COLOR
        bg = "#eef4fb" if data.role == "user" else "#f4effa"
        self.setStyleSheet(
            f"QFrame#{data.role}Entry {{ background: {bg}; border-left: 4px solid {color}; border-radius: 4px; }}")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 8)
        lay.setSpacing(2)
        self.header = QLabel(self)
        self.header.setTextFormat(Qt.TextFormat.RichText)
        self.body = QLabel(self)
        self.body.setTextFormat(Qt.TextFormat.RichText)
        self.body.setWordWrap(True)
        self.body.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.body.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)
        lay.addWidget(self.header)
        lay.addWidget(self.body)
        self.refresh()

    def refresh(self) -> None:
        d = self.data
        who = "You" if d.role == "user" else html.escape(self.persona)
        color = USER_COLOR if d.role == "user" else ASSISTANT_COLOR
        stamp = time.strftime("%H:%M:%S", time.localtime(d.wall))
        parts = [f"<b style='color:{color}'>{who}</b>", f"<span style='color:#777'>{stamp}</span>"]
        if d.role == "assistant" and d.latency_ms is not None:
            parts.append(f"<span style='color:#2c7a3f'>first audio after {d.latency_ms:.0f} ms</span>")
        if d.interrupted:
            parts.append("<span style='color:#b3261e'>interrupted</span>")
        self.header.setText(" &nbsp;·&nbsp; ".join(parts))
        self.body.setText(self.body_html())

    def body_html(self) -> str:
        d = self.data
        if d.role == "user":
            text = html.escape(d.committed.strip())
            if not d.final:
                more = "" if text.endswith((".", "?", "!", "…")) else "…"
                return f"<i style='color:#6b7f99'>{text}{more}</i>"
            return text or "<i style='color:#999'>(nothing understood)</i>"
        heard = html.escape(d.heard)
        unheard = d.committed[len(d.heard):] if d.unheard and d.committed.endswith(d.unheard) else d.unheard
        out = heard
        if unheard:
            out += f"<s style='color:{UNHEARD_COLOR}'>{html.escape(unheard)}</s>"
        return out or "<i style='color:#999'>…</i>"


class TranscriptView(QScrollArea):
    """Scrollable list of :class:`TurnEntry`; follows the newest entry unless the user scrolled up."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._inner.setObjectName("transcriptInner")
        self._inner.setStyleSheet("QWidget#transcriptInner { background: white; }")
        self._layout = QVBoxLayout(self._inner)
        self._layout.setContentsMargins(10, 10, 10, 10)
        self._layout.setSpacing(8)
        self._placeholder = QLabel("Say something, or press Start listening.")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setStyleSheet("color: #999; font-size: 14px; padding: 40px;")
        self._layout.addWidget(self._placeholder)
        self._layout.addStretch(1)
        self.setWidget(self._inner)
        self.entries: dict[tuple[int, str], TurnEntry] = {}
        self.order: list[TurnEntry] = []
        self.persona = "Parley"
        self._follow = True
        self.verticalScrollBar().valueChanged.connect(self._on_scroll)
        self.verticalScrollBar().rangeChanged.connect(self._on_range)

    # -- model updates -----------------------------------------------------------------------------------------

    def entry(self, turn: int, role: str, create: bool = True, wall: float | None = None) -> TurnEntry | None:
        key = (turn, role)
        e = self.entries.get(key)
        if e is None and create:
            self._placeholder.hide()
            data = TurnText(role, turn) if wall is None else TurnText(role, turn, wall=wall)
            e = TurnEntry(data, self.persona, self._inner)
            self.entries[key] = e
            self.order.append(e)
            self._layout.insertWidget(self._layout.count() - 1, e)
        return e

    def user_text(self, turn: int, text: str, partial: bool = False, final: bool = False,
                  full: str | None = None, wall: float | None = None) -> None:
        """Engine semantics: ``partial`` carries the whole hypothesis so far (replaces); otherwise ``text`` is a
        piece appended to it; ``final`` marks the transcript final (``full`` then holds all of it)."""
        e = self.entry(turn, "user", wall=wall)
        if partial:
            e.data.committed = text
        else:
            e.data.committed += text
        if full is not None:
            e.data.committed = full
        e.data.final = e.data.final or final
        e.refresh()

    def assistant_text(self, turn: int, text: str, wall: float | None = None) -> None:
        e = self.entry(turn, "assistant", wall=wall)
        e.data.committed += text
        e.refresh()

    def interrupted(self, turn: int, unheard: str) -> None:
        e = self.entry(turn, "assistant")
        e.data.interrupted = True
        e.data.unheard = unheard
        e.refresh()

    def latency(self, turn: int, ms: float) -> None:
        e = self.entry(turn, "assistant")
        if e.data.latency_ms is None:
            e.data.latency_ms = ms
            e.refresh()

    def clear(self) -> None:
        for e in self.order:
            self._layout.removeWidget(e)
            e.deleteLater()
        self.entries.clear()
        self.order.clear()
        self._placeholder.show()

    def set_persona(self, name: str) -> None:
        self.persona = name or "Parley"

    def plain_text(self) -> str:
        lines = []
        for e in self.order:
            who = "You" if e.data.role == "user" else self.persona
            line = f"{who}: {e.data.heard.strip() if e.data.role == 'assistant' else e.data.text}"
            if e.data.role == "assistant" and e.data.unheard:
                line += f" [unheard: {e.data.unheard}]"
            lines.append(line)
        return "\n".join(lines)

    # -- auto-scroll -------------------------------------------------------------------------------------------

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(hi)
