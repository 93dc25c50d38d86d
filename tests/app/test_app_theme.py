"""Light and dark: every text the window draws is readable (WCAG AA, contrast >= 4.5:1) on the background it is
drawn on, in a light and a dark palette, checked twice:

* on the theme's own list of (text, background) pairs, for several palettes (also an awkward grey one);
* on the rendered widgets: each text area of the real main window (transcript bubbles, state pill, banners, chart
  axis, meters, latency) is grabbed, its background is the most common colour, and its text pixels must reach the
  ratio. A white bubble with the dark palette's light text (the old look) fails here.

The dark screenshot (docs/screenshots/main_dark.png) is taken in test_app_screenshots.py.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QRect
from PySide6.QtGui import QColor, QImage, QPalette
from PySide6.QtWidgets import QApplication, QWidget

from app.main_window import MainWindow
from app.widgets.theme import (
    AA_NORMAL, contrast, dark_palette, light_palette, luminance, readable, theme_for,
)
from _shared import event
from core.settings import Settings

pytestmark = pytest.mark.ui


def _grey_palette() -> QPalette:
    """A palette no theme designer would pick: mid-grey everywhere, text barely darker."""
    p = QPalette()
    for role in (QPalette.ColorRole.Window, QPalette.ColorRole.Base, QPalette.ColorRole.Button):
        p.setColor(role, QColor("#8a8a8a"))
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText):
        p.setColor(role, QColor("#5a5a5a"))
    return p


@pytest.mark.parametrize("name", ["light", "dark", "grey"])
def test_every_text_pair_of_the_theme_reaches_aa(qapp, name):
    palette = {"light": light_palette, "dark": dark_palette, "grey": _grey_palette}[name]()
    theme = theme_for(palette)
    assert theme.dark == (name == "dark")
    pairs = theme.text_pairs()
    assert len(pairs) >= 25
    low = {k: round(contrast(fg, bg), 2) for k, (fg, bg) in pairs.items() if contrast(fg, bg) < AA_NORMAL}
    assert not low, f"{name}: below {AA_NORMAL}:1: {low}"


def test_contrast_maths():
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast("#767676", "#ffffff") == pytest.approx(4.54, abs=0.01)      # the classic AA grey
    assert luminance("#ffffff") == pytest.approx(1.0)
    assert contrast(readable("#999999", "#ffffff"), "#ffffff") >= AA_NORMAL
    assert contrast(readable("#444444", "#222222"), "#222222") >= AA_NORMAL     # lightened on dark


# ------------------------------------------------------------------------------------------------ rendered ----


def _pixels(img: QImage) -> np.ndarray:
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    arr = np.frombuffer(bytes(img.constBits()), dtype=np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)
    return arr[:, : img.width(), :3][..., ::-1].reshape(-1, 3)       # BGRA in memory -> RGB


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def rendered_contrast(widget: QWidget, rect: QRect | None = None) -> tuple[float, QColor]:
    """(best text contrast against the background, the background) of a rendered area; the background is the most
    common colour there, the text the pixels farthest from it."""
    px = _pixels((widget.grab(rect) if rect is not None else widget.grab()).toImage())
    colors, counts = np.unique(px, axis=0, return_counts=True)
    bg = colors[np.argmax(counts)]
    lum, lbg = _luminance(colors), _luminance(bg[None, :])[0]
    ratios = (np.maximum(lum, lbg) + 0.05) / (np.minimum(lum, lbg) + 0.05)
    return float(ratios.max()), QColor(*[int(x) for x in bg])


def _in(window: QWidget, child: QWidget, inset: int = 0) -> QRect:
    top_left = child.mapTo(window, QPoint(0, 0))
    return QRect(top_left, child.size()).adjusted(inset, inset, -inset, -inset)


@pytest.fixture
def window(qtbot, config_dir):
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.resize(1100, 700)
    w.show()
    qtbot.waitExposed(w)
    t = 0.0
    for turn, (q, a) in enumerate((("What is the capital of France?", "The capital of France is Paris."),
                                   ("And how many people live there?",
                                    "About two million in the city itself, and more than twelve million around it.")),
                                  start=1):
        w.handle_event(event("user_text", t + 0.5, turn, {"text": q, "final": True}))
        w.handle_event(event("assistant_text", t + 1.0, turn, {"text": a}))
        w.handle_event(event("latency", t + 1.1, turn, {"first_played_ms": 600.0 + 40 * turn}))
        t += 4
    w.handle_event(event("user_text", t, 3, {"text": "Thank you, that is", "partial": True}))
    w.handle_event(event("interruption", t, 3, {"reply_turn": 2, "unheard_text": "and more than twelve million "
                                                                                  "around it."}))
    w.notices.notify_code("playback_starved", "warning", "playback starved: 96 since last report", count=96)
    w.notices.notify_code("out_of_memory", "error", "RuntimeError: CUDA out of memory", where="reply")
    w.handle_event(event("state", t + 0.1, 3, {"state": "speaking"}))
    base = datetime.datetime(2026, 11, 22, 10, 30, 0).timestamp()
    for i, e in enumerate(w.transcript.order):
        e.data.wall = base + 4 * i
        e.refresh()
    yield w
    QApplication.instance().setPalette(light_palette())
    w.close()
    assert w.wait_shut_down()


def _check_window(w: MainWindow, qtbot) -> dict[str, float]:
    qtbot.wait(50)
    QApplication.processEvents()
    areas: dict[str, tuple[QWidget, QRect | None]] = {}
    for i, e in enumerate(w.transcript.order):
        areas[f"bubble {i} header"] = (e, e.header.geometry())
        areas[f"bubble {i} text"] = (e, e.body.geometry())
    for i, b in enumerate(w.notices.banners):
        areas[f"banner {b.level}"] = (w, _in(w, b.label))
    areas["latency"] = (w, _in(w, w.panel.latency_label))
    areas["chart axis"] = (w.panel.chart, QRect(0, 0, 30, w.panel.chart.height()))
    meter = w.panel.meters["mic"]
    areas["meter figure"] = (meter, QRect(meter.width() - meter.TEXT_W, 0, meter.TEXT_W, meter.height()))
    results = {}
    for name, (widget, rect) in areas.items():
        results[name], _ = rendered_contrast(widget, rect)
    for state in ("idle", "listening", "user_speaking", "thinking", "speaking", "interrupted", "loading", "muted"):
        w.panel.badge.set_state(state)
        QApplication.processEvents()
        results[f"pill {state}"], _ = rendered_contrast(w.panel.badge, w.panel.badge.rect().adjusted(10, 8, -10, -8))
    return results


@pytest.mark.parametrize("name", ["light", "dark"])
def test_rendered_window_is_readable(qtbot, window, name):
    app = QApplication.instance()
    app.setPalette(dark_palette() if name == "dark" else light_palette())
    results = _check_window(window, qtbot)
    low = {k: round(v, 2) for k, v in results.items() if v < AA_NORMAL}
    assert not low, f"{name}: rendered text below {AA_NORMAL}:1: {low}"
    bubble_bg = rendered_contrast(window.transcript.order[0])[1]
    if name == "dark":
        assert luminance(bubble_bg) < 0.1, "a dark palette gets dark bubbles"
    else:
        assert luminance(bubble_bg) > 0.8


def test_switching_the_palette_while_running_restyles_everything(qtbot, window):
    app = QApplication.instance()
    entry = window.transcript.order[0]
    app.setPalette(light_palette())
    qtbot.wait(20)
    light_bg = rendered_contrast(entry)[1]
    app.setPalette(dark_palette())
    qtbot.waitUntil(lambda: luminance(rendered_contrast(entry)[1]) < 0.1, timeout=3000)
    assert rendered_contrast(entry)[1] != light_bg
    assert luminance(rendered_contrast(window.notices.banners[0])[1]) < 0.2
    # a conversation line added in the dark is dark too
    window.handle_event(event("assistant_text", 20.0, 9, {"text": "Added in the dark."}))
    qtbot.wait(20)
    assert luminance(rendered_contrast(window.transcript.entry(9, "assistant"))[1]) < 0.1
