"""Cards above the transcript: the loading progress (steps, a bar, an estimate) and the first-run welcome."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from app.widgets.theme import css, widget_theme

WELCOME = ("<b>Welcome to Parley.</b> Just talk: it answers when you pause. Interrupt it any time, "
           "<b>Esc</b> stops it, and with Push-to-talk on, hold <b>Space</b> while you speak. "
           "You can also type below.")


class _Card(QFrame):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self._styled = None

    def restyle(self) -> None:
        t = widget_theme(self)
        if t is self._styled:
            return
        self._styled = t
        self.setStyleSheet(f"QFrame {{ background: {css(t.assistant_bg)}; border-radius: 6px; }} "
                           f"QLabel {{ color: {css(t.text)}; background: transparent; }}")

    def showEvent(self, ev) -> None:  # noqa: N802
        self.restyle()
        super().showEvent(ev)

    def changeEvent(self, ev) -> None:  # noqa: N802
        super().changeEvent(ev)
        if ev.type() == ev.Type.PaletteChange:
            self.restyle()          # a no-op unless the palette (and so the theme) really changed


class LoadingCard(_Card):
    """Loading a voice model: the step it is at, a progress bar and an estimate from the last load of the same
    profile. Without a last load (the first start, when the models are converted once) the bar is busy and the text
    says it is the first time, until a step reports how far it is: then the bar shows that step's progress and the
    estimate is that step's remaining time, from its pace so far."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        self.title = QLabel("Loading the voice model", self)
        self.title.setStyleSheet("font-weight: bold;")
        self.step = QLabel("", self)
        self.step.setWordWrap(True)
        self.bar = QProgressBar(self)
        self.bar.setTextVisible(False)
        self.bar.setRange(0, 1000)
        self.estimate = QLabel("", self)
        for w in (self.title, self.step, self.bar, self.estimate):
            lay.addWidget(w)
        self._started = 0.0
        self._expected_s: float | None = None
        self._step_fraction: tuple[str, float, float] | None = None   # (step, first fraction, when) of the first start
        self._timer = QTimer(self)
        self._timer.setInterval(250)
        self._timer.timeout.connect(self._tick)
        self.hide()

    def start(self, profile: str, expected_s: float | None) -> None:
        self._started = time.monotonic()
        self._expected_s = expected_s
        self._step_fraction = None
        self.title.setText(f"Loading the {profile} voice model")
        self.step.setText("Starting…")
        if expected_s is None:
            self.bar.setRange(0, 0)          # busy: no estimate yet
            self.estimate.setText("The first start converts the models once; this takes a while.")
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(0)
        self._tick()
        self._timer.start()
        self.show()

    def set_step(self, message: str, step: str = "", fraction: float | None = None) -> None:
        if message:
            self.step.setText(message)
        if self._expected_s is not None or fraction is None:
            return
        now = time.monotonic()
        if self._step_fraction is None or self._step_fraction[0] != step:
            self._step_fraction = (step, fraction, now)
            self.bar.setRange(0, 1000)
        self.bar.setValue(max(self.bar.value(), int(1000 * min(1.0, fraction))))
        _, f0, t0 = self._step_fraction
        if fraction > f0 and now - t0 >= 1.0:
            left = (now - t0) * (1.0 - fraction) / (fraction - f0)
            self.estimate.setText(f"Converting the models once: about {left:.0f} s left for this step"
                                  if left >= 1 else "Converting the models once: almost done…")

    def finish(self) -> float:
        """Loading ended; returns how long it took."""
        self._timer.stop()
        self.hide()
        return time.monotonic() - self._started

    @property
    def fraction(self) -> float | None:
        if self._expected_s is None:
            return None
        return min(0.95, (time.monotonic() - self._started) / max(self._expected_s, 0.5))

    def _tick(self) -> None:
        f = self.fraction
        if f is None:
            return
        self.bar.setValue(int(1000 * f))
        left = max(0.0, (self._expected_s or 0.0) - (time.monotonic() - self._started))
        self.estimate.setText(f"About {left:.0f} s left" if left >= 1 else "Almost ready…")


class WelcomeCard(_Card):
    """Shown on the first start only: how to talk to Parley. ``dismissed`` when the user has read it."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QHBoxLayout(self)
        self.text = QLabel(WELCOME, self)
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.ok = QPushButton("Got it", self)
        self.ok.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.ok.clicked.connect(self._dismiss)
        lay.addWidget(self.text, 1)
        lay.addWidget(self.ok, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def _dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()
