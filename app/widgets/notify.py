"""Non-blocking notifications: a short stack of banners at the top of the window. Never a modal dialog: the
conversation goes on.

* Each banner is one plain sentence (see :mod:`app.notices`); the engineering text behind it sits in a *Details*
  expander on the banner.
* A notice is shown once: a repeat (same ``key``, by default the sentence) bumps a counter on the banner that is
  already there instead of stacking another. A warning or info the user dismissed (or that faded) stays away for
  ``QUIET_S`` when it recurs; errors always come back.
* Notices for engineers only (:func:`app.notices.plain_notice` gives no sentence) never make a banner: they go to
  the log and to ``technical`` (the engineering-details panel listens).
* Errors stay until dismissed, warnings and info fade after a while. Colours follow the palette.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QToolButton, QVBoxLayout, QWidget

from app.notices import plain_notice
from app.widgets.theme import css, widget_theme

log = logging.getLogger(__name__)

LEVELS = ("error", "warning", "info")
ICONS = {"error": "✖", "warning": "⚠", "info": "ℹ"}
AUTO_HIDE_MS = {"info": 6000, "warning": 15000}
LOG_REPEAT_S = 30.0   # a repeated notice (same key) is logged again at most this often
QUIET_S = 600.0       # a dismissed warning/info does not pop up again for this long


class Banner(QFrame):
    closed = Signal(object)

    def __init__(self, level: str, text: str, action_text: str = "", parent: QWidget | None = None,
                 key: str | None = None, details: str = "") -> None:
        super().__init__(parent)
        self.level = level if level in LEVELS else "info"
        self.text = text
        self.key = key or text
        self.details = details
        self.created = time.monotonic()
        self.count = 1
        self.setObjectName("banner")
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 4, 4, 4)
        outer.setSpacing(2)
        lay = QHBoxLayout()
        lay.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(lay)
        self.label = QLabel(self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
        self.details_button = QToolButton(self)
        self.details_button.setText("Details")
        self.details_button.setCheckable(True)
        self.details_button.setAutoRaise(True)
        self.details_button.setArrowType(Qt.ArrowType.RightArrow)
        self.details_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.details_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.details_button.toggled.connect(self._toggle_details)
        lay.addWidget(self.details_button)
        self.action = None
        if action_text:
            self.action = QPushButton(action_text, self)
            self.action.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            lay.addWidget(self.action)
        close = QPushButton("✕", self)
        close.setFlat(True)
        close.setFixedWidth(26)
        close.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        close.setToolTip("Dismiss")
        close.clicked.connect(lambda: self.closed.emit(self))
        lay.addWidget(close)
        self.details_label = QLabel(self)
        self.details_label.setObjectName("details")
        self.details_label.setWordWrap(True)
        self.details_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details_label.hide()
        outer.addWidget(self.details_label)
        self._styled = None
        self.restyle()
        self._render()
        if self.level in AUTO_HIDE_MS:
            self._timer = QTimer(self)          # a child: it dies with the banner
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self._expire)
            self._timer.start(AUTO_HIDE_MS[self.level])

    def restyle(self) -> None:
        th = widget_theme(self)
        if th is self._styled:
            return
        self._styled = th
        bg, fg, border = th.banners[self.level]
        self.setStyleSheet(f"QFrame#banner {{ background: {css(bg)}; border: 1px solid {css(border)}; "
                           f"border-radius: 4px; }} QLabel, QToolButton {{ color: {css(fg)}; }}")

    def _render(self) -> None:
        more = f"  (×{self.count})" if self.count > 1 else ""
        self.label.setText(f"{ICONS[self.level]} {self.text}{more}")
        self.details_button.setVisible(bool(self.details))
        self.details_label.setText(self.details)

    def _toggle_details(self, shown: bool) -> None:
        self.details_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)
        self.details_label.setVisible(shown)
        timer = getattr(self, "_timer", None)
        if timer is not None:
            if shown:
                timer.stop()        # being read: do not fade away
            else:
                timer.start()

    def _expire(self) -> None:
        self.closed.emit(self)

    def bump(self, text: str | None = None, details: str | None = None) -> None:
        self.count += 1
        if text:
            self.text = text
        if details:
            self.details = details
        self._render()
        timer = getattr(self, "_timer", None)
        if timer is not None and not self.details_button.isChecked():
            timer.start()   # still happening: keep it visible


class NotificationArea(QWidget):
    """Holds at most ``max_banners``; a repeated notice bumps a counter instead of stacking."""

    technical = Signal(str, str, str)     # level, code (or ""), engineering text: every notice, shown or not

    def __init__(self, parent: QWidget | None = None, max_banners: int = 3) -> None:
        super().__init__(parent)
        self.max_banners = max_banners
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(8, 4, 8, 0)
        self._lay.setSpacing(4)
        self.banners: list[Banner] = []
        self.history: list[tuple[str, str]] = []
        self._last_logged: dict[str, float] = {}
        self._quiet_until: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self.hide()

    def notify(self, level: str, text: str, action_text: str = "", action: Callable[[], Any] | None = None,
               key: str | None = None, details: str = "", code: str = "") -> Banner | None:
        """Show ``text`` (a plain sentence). Notices with the same ``key`` (default: the text) share one banner with
        a counter, so a recurring problem never floods the window or the log. Returns the banner, or None when a
        dismissed warning is being kept quiet."""
        key = key or text
        self.history.append((level, text))
        self._counts[key] = self._counts.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= LOG_REPEAT_S:
            self._last_logged[key] = now
            log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO), "notice: %s%s",
                    text, f" ({details})" if details else "")
        self.technical.emit(level, code, details or text)
        for b in self.banners:
            if b.key == key:
                b.bump(text, details)
                return b
        if level != "error" and now < self._quiet_until.get(key, 0.0):
            return None
        b = Banner(level, text, action_text, self, key=key, details=details)
        if action is not None and b.action is not None:
            b.action.clicked.connect(action)
        b.closed.connect(self.dismiss)
        self.banners.append(b)
        self._lay.addWidget(b)
        while len(self.banners) > self.max_banners:
            self.dismiss(self.banners[0])
        self.show()
        return b

    def notify_code(self, code: str, level: str, technical: str = "", key: str | None = None,
                    **fields: Any) -> Banner | None:
        """An engine/audio/session notice by its code: shown as its plain sentence with the technical text as
        details, or only logged (and sent to ``technical``) when it is for engineers."""
        sentence, details = plain_notice(code, level, technical, **fields)
        if sentence is None:
            log.debug("notice for the log only: %s", details)
            self.technical.emit(level, code, details)
            return None
        return self.notify(level, sentence, key=key or code or sentence, details=details, code=code)

    def dismiss(self, banner: Banner) -> None:
        if banner not in self.banners:
            return
        self.banners.remove(banner)
        if banner.level != "error":
            self._quiet_until[banner.key] = time.monotonic() + QUIET_S
        self._lay.removeWidget(banner)
        banner.deleteLater()
        if not self.banners:
            self.hide()

    def clear(self) -> None:
        for b in list(self.banners):
            self.dismiss(b)
        self._quiet_until.clear()

    def texts(self) -> list[str]:
        return [b.text for b in self.banners]

    def times_notified(self, key: str) -> int:
        """How often a notice with this key came (shown, coalesced or kept quiet)."""
        return self._counts.get(key, 0)
