"""The duplex-state panel: current state, a live strip chart of the turn-state probabilities (or the VAD
probability), a state timeline under it, level meters (raw mic, cleaned mic, output) and latency statistics.

Everything is painted with QPainter from small in-memory histories; repaints are driven by one timer at about
20 Hz, so a burst of events never costs more than one paint. Colours come from the palette (:mod:`app.widgets.theme`),
light or dark.
"""

from __future__ import annotations

import collections
import math
import statistics
import time
from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.widgets.theme import STATE_HUES, Theme, css, widget_theme

STATES = ("idle", "listening", "user_speaking", "thinking", "speaking", "interrupted")
STATE_LABELS = {
    "idle": "Idle",
    "listening": "Listening",
    "getting_ready": "Getting ready",
    "user_speaking": "You are speaking",
    "thinking": "Thinking",
    "speaking": "Speaking",
    "interrupted": "Interrupted",
    "loading": "Loading model",
    "muted": "Mic muted",
    "push_to_talk": "Push-to-talk: hold Space",
}
STATE_COLORS = STATE_HUES   # the hues; the theme darkens them where white text must stay readable


@dataclass
class Series:
    key: str
    label: str
    index: int       # into Theme.series (the colour)


SERIES = (
    Series("p_cl", "keep listening", 0),
    Series("p_ss", "answer now", 1),
    Series("p_el", "ignore", 2),
    Series("vad", "voice (VAD)", 3),
)


class SessionClock:
    """Maps engine session time (seconds since session start) to now: ``now() = monotonic() - offset``, where the
    offset is the smallest (arrival - t) seen, so a sample is never drawn in the future."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self.last_t: float | None = None

    def reset(self) -> None:
        self.offset = None
        self.last_t = None

    def observe(self, t: float) -> bool:
        """Record an event time; True when time went backwards by more than a second (new session)."""
        arrival = time.monotonic()
        restarted = self.last_t is not None and t < self.last_t - 1.0
        if restarted or self.offset is None:
            self.offset = arrival - t
        else:
            self.offset = min(self.offset, arrival - t)
        self.last_t = t if restarted or self.last_t is None else max(self.last_t, t)
        return restarted

    def now(self) -> float:
        if self.offset is None:
            return time.monotonic()
        return time.monotonic() - self.offset


class StateBadge(QLabel):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumHeight(44)
        f = QFont(self.font())
        f.setPointSizeF(f.pointSizeF() * 1.5)
        f.setBold(True)
        self.setFont(f)
        self.state = ""
        self._styled: tuple[str, Theme] | None = None
        self.set_state("idle")

    def colors(self) -> tuple[QColor, QColor]:
        """(background, text) of the pill for the current state."""
        return widget_theme(self).state(self.state)

    def set_state(self, state: str) -> None:
        self.state = state
        self.setText(STATE_LABELS.get(state, state.replace("_", " ").capitalize()))
        self.restyle()

    def restyle(self) -> None:
        key = (self.state, widget_theme(self))
        if key == self._styled:
            return
        self._styled = key
        bg, fg = self.colors()
        self.setStyleSheet(f"QLabel {{ color: {css(fg)}; background: {css(bg)}; border-radius: 6px; padding: 6px; }}")


class StripChart(QWidget):
    """Probabilities over the last ``seconds`` (x: time, right edge = now; y: 0..1), plus a band of the duplex
    state below the plot. Samples carry the engine's session time (``Event.t``); :class:`SessionClock` maps it to
    the wall clock so the chart scrolls smoothly between events."""

    def __init__(self, seconds: float = 10.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.seconds = seconds
        self.samples: dict[str, collections.deque[tuple[float, float]]] = {
            s.key: collections.deque(maxlen=4000) for s in SERIES}
        self.states: collections.deque[tuple[float, str]] = collections.deque(maxlen=2000)
        self.visible_series: set[str] = {"p_cl", "p_ss", "p_el", "vad"}
        self.threshold: float | None = 0.5
        self.clock = SessionClock()
        self.now_fn = self.clock.now
        self.frozen_now: float | None = None   # for deterministic screenshots/tests
        self.setMinimumSize(260, 150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:
        return QSize(360, 190)

    def stamp(self, t: float | None) -> float:
        if t is None:
            return self.now_fn()
        if self.clock.observe(t):      # the session clock went backwards: a new session
            self.clear(keep_clock=True)
        return t

    def add(self, key: str, value: float, t: float | None = None) -> None:
        if key in self.samples and value is not None and math.isfinite(value):
            self.samples[key].append((self.stamp(t), max(0.0, min(1.0, float(value)))))

    def add_state(self, state: str, t: float | None = None) -> None:
        self.states.append((self.stamp(t), state))

    def clear(self, keep_clock: bool = False) -> None:
        for d in self.samples.values():
            d.clear()
        self.states.clear()
        if not keep_clock:
            self.clock.reset()

    def has_series(self, key: str) -> bool:
        return bool(self.samples.get(key))

    def paintEvent(self, _ev) -> None:  # noqa: N802 (Qt naming)
        p = QPainter(self)
        try:
            self._paint(p)
        finally:
            p.end()

    def _paint(self, p: QPainter) -> None:
        # Step plots are axis-aligned: no antialiasing needed (it made each frame several times slower).
        w, h = self.width(), self.height()
        band_h = 12
        legend_h = 16
        left, right, top = 30, 6, 4 + legend_h
        bottom = h - band_h - 18
        plot = QRectF(left, top, max(10, w - left - right), max(10, bottom - top))
        th = widget_theme(self)
        p.fillRect(self.rect(), th.chart_bg)
        p.fillRect(plot, th.plot_bg)
        now = self.frozen_now if self.frozen_now is not None else self.now_fn()
        t0 = now - self.seconds

        def x_of(t: float) -> float:
            return plot.left() + (t - t0) / self.seconds * plot.width()

        def y_of(v: float) -> float:
            return plot.bottom() - v * plot.height()

        # grid
        p.setPen(QPen(th.grid, 1))
        for v in (0.25, 0.5, 0.75):
            p.drawLine(QPointF(plot.left(), y_of(v)), QPointF(plot.right(), y_of(v)))
        for s in range(1, int(self.seconds)):
            x = x_of(now - s)
            p.drawLine(QPointF(x, plot.top()), QPointF(x, plot.bottom()))
        if self.threshold is not None:
            pen = QPen(th.meter_peak if th.dark else th.axis_text, 1, Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.drawLine(QPointF(plot.left(), y_of(self.threshold)), QPointF(plot.right(), y_of(self.threshold)))
        p.setPen(th.axis_text)
        small = QFont(self.font())
        small.setPointSizeF(max(6.5, small.pointSizeF() * 0.8))
        p.setFont(small)
        for v in (0.0, 0.5, 1.0):
            p.drawText(QRectF(0, y_of(v) - 7, left - 4, 14),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:g}")
        p.drawText(QRectF(plot.left(), bottom + band_h + 2, plot.width(), 14),
                   Qt.AlignmentFlag.AlignLeft, f"−{self.seconds:g} s")
        p.drawText(QRectF(plot.left(), bottom + band_h + 2, plot.width(), 14), Qt.AlignmentFlag.AlignRight, "now")

        # series
        p.save()
        p.setClipRect(plot)
        for s in SERIES:
            if s.key not in self.visible_series:
                continue
            pts = [(t, v) for t, v in list(self.samples[s.key]) if t >= t0 - 1.0]
            if len(pts) < 1:
                continue
            # step plot: a probability holds until the next sample
            line = [QPointF(x_of(pts[0][0]), y_of(pts[0][1]))]
            prev_y = y_of(pts[0][1])
            for t, v in pts[1:]:
                x, y = x_of(t), y_of(v)
                line.append(QPointF(x, prev_y))
                line.append(QPointF(x, y))
                prev_y = y
            line.append(QPointF(min(x_of(now), plot.right()), prev_y))
            p.setPen(QPen(th.series[s.index], 2 if s.key != "p_el" else 1))
            p.drawPolyline(line)
        p.restore()

        # state band
        band = QRectF(plot.left(), bottom + 1, plot.width(), band_h)
        p.fillRect(band, th.band_bg)
        p.setPen(th.axis_text)
        p.drawText(QRectF(0, band.top() - 1, left - 3, band.height() + 2),
                   Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, "state")
        states = list(self.states)  # snapshot
        for i, (t, st) in enumerate(states):
            t_end = states[i + 1][0] if i + 1 < len(states) else now
            if t_end < t0:
                continue
            x1, x2 = max(band.left(), x_of(t)), min(band.right(), x_of(t_end))
            if x2 > x1:
                p.fillRect(QRectF(x1, band.top(), x2 - x1, band.height()), th.state(st)[0])

        # legend
        x = plot.left()
        for s in SERIES:
            if s.key not in self.visible_series or not self.samples[s.key]:
                continue
            p.fillRect(QRectF(x, 5, 10, 8), th.series[s.index])
            p.setPen(th.axis_text)
            tw = p.fontMetrics().horizontalAdvance(s.label)
            p.drawText(QRectF(x + 13, 1, tw + 4, 16), Qt.AlignmentFlag.AlignVCenter, s.label)
            x += tw + 26


class LevelMeter(QWidget):
    """Horizontal dBFS meter (-60..0 dB) with a decaying peak marker."""

    FLOOR_DB = -60.0

    def __init__(self, label: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.db = self.FLOOR_DB
        self.peak_db = self.FLOOR_DB
        self._peak_t = 0.0
        self.setMinimumHeight(18)
        self.setMinimumWidth(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def sizeHint(self) -> QSize:
        return QSize(220, 18)

    def set_level(self, db: float) -> None:
        db = max(self.FLOOR_DB, min(0.0, db if math.isfinite(db) else self.FLOOR_DB))
        now = time.monotonic()
        # fast attack, slow release
        self.db = db if db > self.db else self.db + (db - self.db) * 0.35
        if db >= self.peak_db or now - self._peak_t > 1.5:
            self.peak_db, self._peak_t = db, now

    TEXT_W = 52      # the figure sits beside the bar, on the panel's own background

    def text(self) -> str:
        return f"{self.db:.0f} dB" if self.db > self.FLOOR_DB + 0.5 else "silent"

    def paintEvent(self, _ev) -> None:  # noqa: N802
        th = widget_theme(self)
        p = QPainter(self)
        r = QRectF(0, 2, max(10, self.width() - self.TEXT_W - 6), self.height() - 4)
        p.fillRect(r, th.meter_bg)
        frac = (self.db - self.FLOOR_DB) / -self.FLOOR_DB
        if frac > 0:
            color = "#2e9d57" if self.db < -12 else ("#d0a21c" if self.db < -3 else "#c63b32")
            p.fillRect(QRectF(r.left(), r.top(), r.width() * frac, r.height()), QColor(color))
        pk = (self.peak_db - self.FLOOR_DB) / -self.FLOOR_DB
        if pk > 0:
            p.fillRect(QRectF(r.left() + r.width() * pk - 2, r.top(), 2, r.height()), th.meter_peak)
        p.setPen(th.meter_text)
        p.drawText(QRectF(r.right() + 6, 0, self.TEXT_W, self.height()),
                   Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignRight, self.text())
        p.end()


def to_db(value: float, is_db: bool = False) -> float:
    if is_db:
        return float(value)
    v = abs(float(value))
    return 20.0 * math.log10(v) if v > 1e-6 else LevelMeter.FLOOR_DB


class LatencyStats:
    """End of user speech -> first audio, per turn; summarised as last / p50 / p90."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, ms: float) -> None:
        self.values.append(float(ms))

    def clear(self) -> None:
        self.values.clear()

    def summary(self) -> str:
        if not self.values:
            return "latency: no answers yet"
        v = self.values
        text = f"latency last {v[-1]:.0f} ms · p50 {statistics.median(v):.0f} ms"
        if len(v) >= 5:
            q = statistics.quantiles(v, n=10, method="inclusive")[8]
            text += f" · p90 {q:.0f} ms"
        return text + f" · n={len(v)}"


class DuplexPanel(QFrame):
    """The right-hand panel of the main window."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 10, 10, 10)
        lay.setSpacing(8)
        self.badge = StateBadge(self)
        lay.addWidget(self.badge)
        self.detail = QLabel("", self)
        self.detail.setWordWrap(True)
        lay.addWidget(self.detail)
        self.title = QLabel(self)
        lay.addWidget(self.title)
        self.chart = StripChart(parent=self)
        lay.addWidget(self.chart, 1)
        meters = QGridLayout()
        meters.setHorizontalSpacing(8)
        meters.setVerticalSpacing(4)
        self.meters: dict[str, LevelMeter] = {}
        for row, (key, label) in enumerate((("mic", "Mic (raw)"), ("clean", "Mic (cleaned)"), ("out", "Output"))):
            meters.addWidget(QLabel(label), row, 0)
            m = LevelMeter(label, self)
            self.meters[key] = m
            meters.addWidget(m, row, 1)
        lay.addLayout(meters)
        self.latency = LatencyStats()
        self.latency_label = QLabel(self.latency.summary(), self)
        lay.addWidget(self.latency_label)
        self._styled: Theme | None = None
        self.restyle()
        self._dirty = True
        self._wanted = "idle"
        self._badge_since = 0.0
        self._sticky = QTimer(self)
        self._sticky.setSingleShot(True)
        self._sticky.timeout.connect(self._show_badge)
        self._timer = QTimer(self)
        self._timer.setInterval(50)   # 20 frames/s: smooth scrolling at a few % of a core
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    STICKY_S = {"interrupted": 0.9}   # shown at least this long: the engine leaves it at once

    def restyle(self) -> None:
        th = widget_theme(self)
        if th is self._styled:
            return
        self._styled = th
        self.detail.setStyleSheet(f"color: {css(th.muted)};")
        self.title.setText(f"<b>Turn-taking</b> <span style='color:{css(th.muted)}'>(model state head / VAD)</span>")
        self.latency_label.setStyleSheet(f"color: {css(th.latency)}; font-weight: bold;")
        self._dirty = True

    def set_state(self, state: str, detail: str = "", t: float | None = None) -> None:
        if state in STATES or state in ("muted", "push_to_talk"):
            if not self.chart.states or self.chart.states[-1][1] != state:
                self.chart.add_state(state, t)    # the timeline records every state when it happened
        if detail or state in STATES:
            self.detail.setText(detail)
        self._dirty = True
        self._wanted = state
        hold = self.STICKY_S.get(self.badge.state, 0.0)
        left = hold - (time.monotonic() - self._badge_since)
        if state != self.badge.state and left > 0:
            self._sticky.start(int(left * 1000) + 1)
            return
        self._show_badge(state)

    def _show_badge(self, state: str | None = None) -> None:
        state = state or self._wanted
        if state != self.badge.state:
            self.badge.set_state(state)
            self._badge_since = time.monotonic()

    def add_probs(self, probs, t: float | None = None) -> None:
        for key, v in zip(("p_cl", "p_ss", "p_el"), probs):
            self.chart.add(key, v, t)
        self._dirty = True

    def add_vad(self, prob: float, t: float | None = None) -> None:
        self.chart.add("vad", prob, t)
        self._dirty = True

    def set_levels(self, mic: float | None = None, clean: float | None = None, out: float | None = None) -> None:
        for key, db in (("mic", mic), ("clean", clean), ("out", out)):
            if db is not None:
                self.meters[key].set_level(db)
        self._dirty = True

    def add_latency(self, ms: float) -> None:
        self.latency.add(ms)
        self.latency_label.setText(self.latency.summary())

    def reset(self) -> None:
        self.chart.clear()
        self.latency.clear()
        self.latency_label.setText(self.latency.summary())
        self.set_levels(-60.0, -60.0, -60.0)

    def _tick(self) -> None:
        # The chart scrolls with time, so it repaints while anything is visible in it; meters decay to silence.
        now = self.chart.now_fn()
        recent = any(d and d[-1][0] > now - self.chart.seconds - 1 for d in self.chart.samples.values())
        if self._dirty or recent or self.chart.states:
            self.chart.update()
            for m in self.meters.values():
                m.update()
            self._dirty = False
