"""Non-blocking notifications: a stack of banners at the top of the window. Errors stay until dismissed,
warnings and info fade after a while. Never a modal dialog: the conversation goes on."""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

log = logging.getLogger(__name__)

LEVEL_STYLE = {
    "error": ("#fdecea", "#b3261e", "✖"),
    "warning": ("#fff4e0", "#8a5a00", "⚠"),
    "info": ("#e8f1fb", "#1f5fa8", "ℹ"),
}
AUTO_HIDE_MS = {"info": 6000, "warning": 15000}


LOG_REPEAT_S = 30.0   # a repeated notice (same key) is logged again at most this often


class Banner(QFrame):
    closed = Signal(object)

    def __init__(self, level: str, text: str, action_text: str = "", parent: QWidget | None = None,
                 key: str | None = None) -> None:
        super().__init__(parent)
        self.level = level if level in LEVEL_STYLE else "info"
        self.text = text
        self.key = key or text
        self.created = time.monotonic()
        self.count = 1
        bg, fg, icon = LEVEL_STYLE[self.level]
        self.setObjectName("banner")
        self.setStyleSheet(f"QFrame#banner {{ background: {bg}; border: 1px solid {fg}; border-radius: 4px; }}"
                           f"QLabel {{ color: {fg}; }}")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 4, 4)
        self.label = QLabel(f"{icon} {text}", self)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.label, 1)
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
        if self.level in AUTO_HIDE_MS:
            self._timer = QTimer(self)          # a child: it dies with the banner
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self._expire)
            self._timer.start(AUTO_HIDE_MS[self.level])

    def _expire(self) -> None:
        self.closed.emit(self)

    def bump(self, text: str | None = None) -> None:
        self.count += 1
        if text:
            self.text = text
        _, _, icon = LEVEL_STYLE[self.level]
        self.label.setText(f"{icon} {self.text}  (×{self.count})")
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.start()   # still happening: keep it visible


class NotificationArea(QWidget):
    """Holds at most ``max_banners``; a repeated message bumps a counter instead of stacking."""

    def __init__(self, parent: QWidget | None = None, max_banners: int = 4) -> None:
        super().__init__(parent)
        self.max_banners = max_banners
        self._lay = QVBoxLayout(self)
        self._lay.setContentsMargins(8, 4, 8, 0)
        self._lay.setSpacing(4)
        self.banners: list[Banner] = []
        self.history: list[tuple[str, str]] = []
        self._last_logged: dict[str, float] = {}
        self.hide()

    def notify(self, level: str, text: str, action_text: str = "", action=None, key: str | None = None) -> Banner:
        """Show ``text``. Notices with the same ``key`` (default: the text) share one banner with a counter, so a
        recurring problem (an audio underflow every second) never floods the window or the log."""
        key = key or text
        self.history.append((level, text))
        now = time.monotonic()
        if now - self._last_logged.get(key, -1e9) >= LOG_REPEAT_S:
            self._last_logged[key] = now
            log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO), "notice: %s",
                    text)
        for b in self.banners:
            if b.key == key and b.level == level:
                b.bump(text)
                return b
        b = Banner(level, text, action_text, self, key=key)
        if action is not None and b.action is not None:
            b.action.clicked.connect(action)
        b.closed.connect(self.dismiss)
        self.banners.append(b)
        self._lay.addWidget(b)
        while len(self.banners) > self.max_banners:
            self.dismiss(self.banners[0])
        self.show()
        return b

    def dismiss(self, banner: Banner) -> None:
        if banner not in self.banners:
            return
        self.banners.remove(banner)
        self._lay.removeWidget(banner)
        banner.deleteLater()
        if not self.banners:
            self.hide()

    def clear(self) -> None:
        for b in list(self.banners):
            self.dismiss(b)

    def texts(self) -> list[str]:
        return [b.text for b in self.banners]
