"""Keep a top-level window on the screen it opens on.

A geometry saved on a big screen, or the default size on a small or scaled one (a 1280x800 laptop at 150 % has a
853x533 logical desktop), can be larger than the available area or lie partly outside it. :func:`fit_window_to_screen`
shrinks the window (and its minimum size, when the screen is smaller still) and moves it so that its frame lies
inside the screen's available geometry (without panels and docks).
"""

from __future__ import annotations

from PySide6.QtCore import QRect
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QWidget


def fit_rect(rect: QRect, available: QRect) -> QRect:
    """``rect`` made no larger than ``available`` and moved (as little as possible) to lie inside it."""
    w = min(rect.width(), available.width())
    h = min(rect.height(), available.height())
    x = min(max(rect.x(), available.left()), available.left() + available.width() - w)
    y = min(max(rect.y(), available.top()), available.top() + available.height() - h)
    return QRect(x, y, w, h)


def fit_window_to_screen(window: QWidget, title_bar_px: int = 32) -> bool:
    """Fit ``window``'s frame into the available geometry of the screen it is on. Before the window is shown the
    frame is not known yet: ``title_bar_px`` is kept free for the window manager's title bar. Returns True when
    the window was changed. Maximised and full-screen windows are left alone."""
    if window.isMaximized() or window.isFullScreen():
        return False
    frame = window.frameGeometry()
    geo = window.geometry()
    screen = QGuiApplication.screenAt(frame.center()) or window.screen() or QGuiApplication.primaryScreen()
    if screen is None:
        return False
    available = screen.availableGeometry()
    extra_w = frame.width() - geo.width()
    extra_h = frame.height() - geo.height()
    if extra_h <= 0 and not window.isVisible():
        extra_h = title_bar_px
        frame = QRect(geo.x(), geo.y() - title_bar_px, geo.width(), geo.height() + title_bar_px)
    minimum = window.minimumSize()
    max_w, max_h = available.width() - extra_w, available.height() - extra_h
    if minimum.width() > max_w or minimum.height() > max_h:
        window.setMinimumSize(min(minimum.width(), max(1, max_w)), min(minimum.height(), max(1, max_h)))
    fitted = fit_rect(frame, available)
    if fitted == frame:
        return False
    window.resize(fitted.width() - extra_w, fitted.height() - extra_h)
    window.move(fitted.topLeft())      # a top-level window's position is its frame's
    return True
