"""The conversation transcript: one entry per side of each turn, with times, live partial text, the per-turn
latency on assistant entries, and the part of an answer the user never heard shown struck through and faded.

Colours follow the palette (:mod:`app.widgets.theme`). A right click offers *Copy message*, *Copy conversation* and
*Export conversation…* (Markdown or plain text). :meth:`TranscriptView.conversation` gives the turns as
:class:`core.history.TurnRecord` for the history; :meth:`TranscriptView.show_conversation` fills a read-only view
from such records (the History dialog).
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QPoint, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QPalette
from PySide6.QtWidgets import (
    QFileDialog, QFrame, QLabel, QMenu, QMessageBox, QScrollArea, QSizePolicy, QVBoxLayout, QWidget,
)

from app.widgets.theme import Theme, css, widget_theme
from core.history import Conversation, TurnRecord, export

log = logging.getLogger(__name__)

EXPORT_FILTERS = "Markdown (*.md);;Plain text (*.txt)"
LIVE_PLACEHOLDER = "Say something, or press Start listening."


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
    typed: bool = False                # user: typed, not spoken

    @property
    def text(self) -> str:
        return self.committed.strip()

    @property
    def heard(self) -> str:
        tail = self.unheard_tail
        return self.committed[: len(self.committed) - len(tail)] if tail else self.committed

    @property
    def unheard_tail(self) -> str:
        """The end of ``committed`` that was never played ("" when ``unheard`` is not its end). The backend's text
        may end in the space after a clause, the engine's unheard text never does."""
        tail = self.unheard.strip()
        if not tail:
            return ""
        body = self.committed.rstrip()
        if not body.endswith(tail):
            return ""
        return self.committed[len(body) - len(tail):]

    @property
    def message(self) -> str:
        """What a copy of this message holds: the user's words, or the part of the answer that was heard."""
        return (self.text if self.role == "user" else self.heard).strip()


class TurnEntry(QFrame):
    """One bubble: a header line (who, time, latency) and the text."""

    def __init__(self, data: TurnText, persona: str = "Parley", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data = data
        self.persona = persona
        self.setObjectName(f"{data.role}Entry")
        self.setFrameShape(QFrame.Shape.NoFrame)
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
        for label in (self.header, self.body):
            label.setContextMenuPolicy(Qt.ContextMenuPolicy.NoContextMenu)   # the transcript's menu instead
        lay.addWidget(self.header)
        lay.addWidget(self.body)
        self._styled: Theme | None = None
        self.refresh()

    @property
    def theme(self) -> Theme:
        return widget_theme(self)

    def _restyle(self) -> None:
        t = self.theme
        if t is self._styled:
            return
        self._styled = t
        bg, accent = (t.user_bg, t.user_accent) if self.data.role == "user" else (t.assistant_bg, t.assistant_accent)
        self.setStyleSheet(
            f"QFrame#{self.objectName()} {{ background: {css(bg)}; border-left: 4px solid {css(accent)}; "
            f"border-radius: 4px; }} QLabel {{ color: {css(t.text)}; background: transparent; }}")

    def restyle(self) -> None:
        if self.theme is not self._styled:
            self.refresh()

    def refresh(self) -> None:
        self._restyle()
        t, d = self.theme, self.data
        user = d.role == "user"
        who = "You" if user else html.escape(self.persona)
        accent, muted = (t.user_accent, t.user_muted) if user else (t.assistant_accent, t.assistant_muted)
        stamp = time.strftime("%H:%M:%S", time.localtime(d.wall))
        parts = [f"<b style='color:{css(accent)}'>{who}</b>", f"<span style='color:{css(muted)}'>{stamp}</span>"]
        if user and d.typed:
            parts.append(f"<span style='color:{css(muted)}'>typed</span>")
        if not user and d.latency_ms is not None:
            parts.append(f"<span style='color:{css(t.good)}'>first audio after {d.latency_ms:.0f} ms</span>")
        if d.interrupted:
            parts.append(f"<span style='color:{css(t.bad)}'>interrupted</span>")
        self.header.setText(" &nbsp;·&nbsp; ".join(parts))
        self.body.setText(self.body_html())

    def body_html(self) -> str:
        t, d = self.theme, self.data
        if d.role == "user":
            text = html.escape(d.committed.strip())
            if not d.final:
                more = "" if text.endswith((".", "?", "!", "…")) else "…"
                return f"<i style='color:{css(t.user_muted)}'>{text}{more}</i>"
            return text or f"<i style='color:{css(t.user_muted)}'>(nothing understood)</i>"
        heard = html.escape(d.heard)
        unheard = d.unheard_tail or d.unheard
        out = heard
        if unheard:
            out += f"<s style='color:{css(t.unheard)}'>{html.escape(unheard)}</s>"
        return out or f"<i style='color:{css(t.assistant_muted)}'>…</i>"


class TranscriptView(QScrollArea):
    """Scrollable list of :class:`TurnEntry`; follows the newest entry unless the user scrolled up."""

    copied = Signal(str)           # the text put on the clipboard
    exported = Signal(str)         # the file written

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._inner = QWidget()
        self._inner.setObjectName("transcriptInner")
        self._inner.setBackgroundRole(QPalette.ColorRole.Base)
        self._inner.setAutoFillBackground(True)
        self._layout = QVBoxLayout(self._inner)
        self._layout.setContentsMargins(10, 10, 10, 10)
        self._layout.setSpacing(8)
        self._placeholder = QLabel(LIVE_PLACEHOLDER)
        self._placeholder.setObjectName("placeholder")
        self._placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._placeholder.setWordWrap(True)
        self._layout.addWidget(self._placeholder)
        self._layout.addStretch(1)
        self.setWidget(self._inner)
        self.entries: dict[tuple[int, str], TurnEntry] = {}
        self.order: list[TurnEntry] = []
        self.persona = "Parley"
        self.read_only = False
        self._follow = True
        self._styled: Theme | None = None
        self.restyle()
        self.verticalScrollBar().valueChanged.connect(self._on_scroll)
        self.verticalScrollBar().rangeChanged.connect(self._on_range)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)

    # -- theme ---------------------------------------------------------------------------------------------------

    def restyle(self) -> None:
        t = widget_theme(self)
        if t is self._styled:
            return
        self._styled = t
        self._placeholder.setStyleSheet(f"color: {css(t.placeholder)}; font-size: 14px; padding: 40px;")

    def set_placeholder(self, text: str) -> None:
        """The hint shown while the transcript is empty (the main window keeps it in step with the state)."""
        self._placeholder.setText(text)

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
                  full: str | None = None, wall: float | None = None, typed: bool = False) -> None:
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
        e.data.typed = e.data.typed or typed
        e.refresh()

    def assistant_text(self, turn: int, text: str, wall: float | None = None) -> None:
        e = self.entry(turn, "assistant", wall=wall)
        e.data.committed += text
        e.refresh()

    def remove(self, turn: int, role: str) -> None:
        """Take a bubble away: a backchannel or noise that was not a turn, an answer that nobody heard (the user
        went on speaking and the turn continues)."""
        e = self.entries.pop((turn, role), None)
        if e is None:
            return
        self.order.remove(e)
        self._layout.removeWidget(e)
        e.hide()
        e.deleteLater()
        if not self.order:
            self._placeholder.show()

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
            e.hide()                  # gone now, not only when the deletion is processed
            e.deleteLater()
        self.entries.clear()
        self.order.clear()
        self._placeholder.show()

    def set_persona(self, name: str) -> None:
        self.persona = name or "Parley"

    # -- conversation as records ---------------------------------------------------------------------------------

    def conversation(self) -> list[TurnRecord]:
        """The turns on screen as history records (user text, the answer as heard, wall-clock times)."""
        records: dict[int, TurnRecord] = {}
        for e in self.order:
            d = e.data
            rec = records.setdefault(d.turn, TurnRecord())
            if d.role == "user":
                rec.user, rec.user_time, rec.typed = d.text, d.wall, d.typed
            else:
                rec.assistant, rec.assistant_time = d.heard.strip(), d.wall
                rec.interrupted, rec.unheard, rec.latency_ms = d.interrupted, d.unheard.strip(), d.latency_ms
        return [records[k] for k in sorted(records)]

    def current_conversation(self) -> Conversation:
        turns = [t for t in self.conversation() if not t.empty]
        times = [x for t in turns for x in (t.user_time, t.assistant_time) if x is not None]
        now = time.time()
        return Conversation(id="", started=min(times, default=now), ended=max(times, default=now), turns=turns,
                            persona=self.persona)

    def show_conversation(self, conv: Conversation, read_only: bool = True) -> None:
        """Replace what is shown by a stored conversation."""
        self.clear()
        self.set_persona(conv.persona)
        self.read_only = read_only
        for i, t in enumerate(conv.turns, start=1):
            if t.user:
                self.user_text(i, t.user, final=True, wall=t.user_time, typed=t.typed)
            if t.assistant or t.unheard:
                self.assistant_text(i, t.assistant + ((" " + t.unheard) if t.unheard else ""),
                                    wall=t.assistant_time)
                if t.interrupted:
                    self.interrupted(i, (" " + t.unheard) if t.unheard else "")
                if t.latency_ms is not None:
                    self.latency(i, t.latency_ms)
        if not self.order:
            self._placeholder.setText("(nothing was said)")

    # -- copy and export -----------------------------------------------------------------------------------------

    def plain_text(self) -> str:
        lines = []
        for e in self.order:
            who = "You" if e.data.role == "user" else self.persona
            line = f"{who}: {e.data.heard.strip() if e.data.role == 'assistant' else e.data.text}"
            if e.data.role == "assistant" and e.data.unheard:
                line += f" [unheard: {e.data.unheard}]"
            lines.append(line)
        return "\n".join(lines)

    def _to_clipboard(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)

    def copy_message(self, entry: TurnEntry) -> str:
        text = entry.data.message
        self._to_clipboard(text)
        return text

    def copy_all(self) -> str:
        """The whole conversation as text (who: what, the answers as heard) on the clipboard."""
        from core.history import to_text

        text = to_text(self.current_conversation())
        self._to_clipboard(text)
        return text

    def export_to(self, path: str | Path, fmt: str | None = None) -> Path:
        """Write the conversation shown as Markdown (.md) or text; raises OSError when the disk refuses."""
        out = export(self.current_conversation(), path, fmt)
        self.exported.emit(str(out))
        return out

    def export_dialog(self) -> Path | None:
        """Ask where, then export; a disk that refuses is said in a message box. Returns the file written."""
        start = str(Path.home() / time.strftime("parley-conversation-%Y-%m-%d_%H-%M.md"))
        path, chosen = QFileDialog.getSaveFileName(self, "Export the conversation", start, EXPORT_FILTERS)
        if not path:
            return None
        fmt = "text" if chosen.startswith("Plain") and not path.lower().endswith(".md") else None
        try:
            return self.export_to(path, fmt)
        except OSError as exc:
            QMessageBox.warning(self, "Export failed", f"The conversation was not exported: {exc}")
            return None

    def entry_at(self, pos: QPoint) -> TurnEntry | None:
        """The entry under a point of this view's viewport."""
        w = self.viewport().childAt(pos)
        while w is not None and not isinstance(w, TurnEntry):
            w = w.parentWidget()
        return w

    def context_menu(self, entry: TurnEntry | None) -> QMenu:
        menu = QMenu(self)
        if entry is not None:
            selected = entry.body.selectedText()
            if selected:
                act = QAction("Copy selection", menu)
                act.triggered.connect(lambda: self._to_clipboard(selected))
                menu.addAction(act)
            act = QAction("Copy message", menu)
            act.triggered.connect(lambda: self.copy_message(entry))
            menu.addAction(act)
            menu.addSeparator()
        act = QAction("Copy conversation", menu)
        act.triggered.connect(self.copy_all)
        act.setEnabled(bool(self.order))
        menu.addAction(act)
        act = QAction("Export conversation…", menu)
        act.triggered.connect(self.export_dialog)
        act.setEnabled(bool(self.order))
        menu.addAction(act)
        return menu

    def contextMenuEvent(self, ev) -> None:  # noqa: N802
        pos = self.viewport().mapFrom(self, ev.pos())
        self.context_menu(self.entry_at(pos)).popup(ev.globalPos())

    # -- auto-scroll -------------------------------------------------------------------------------------------

    def _on_scroll(self, value: int) -> None:
        bar = self.verticalScrollBar()
        self._follow = value >= bar.maximum() - 24

    def _on_range(self, _lo: int, hi: int) -> None:
        if self._follow:
            self.verticalScrollBar().setValue(hi)
