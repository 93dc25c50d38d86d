"""Colours that follow the system palette, light or dark, and stay readable.

Every colour Parley draws text in, and every background it draws that text on, comes from :func:`theme_for` (the
widget's :class:`~PySide6.QtGui.QPalette`): bubbles and banners are tints of the palette's own base/window colours,
accents are picked for a light or a dark palette, and :func:`readable` then nudges each text colour toward black or
white until it reaches the WCAG AA contrast ratio (4.5:1) on its background, so even an unusual system palette
stays legible. :meth:`Theme.text_pairs` lists every (text, background) pair the widgets draw; the tests check each.

Widgets take their theme from their window's palette (:func:`widget_theme`; their own palette is changed by their
own style sheets). A window whose palette changes (``QEvent.PaletteChange``: the system switched between light and
dark while the app runs) calls :func:`restyle_tree`, which has every widget with a ``restyle()`` method re-style.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QEvent
from PySide6.QtGui import QColor, QPalette

AA_NORMAL = 4.5        # WCAG 2.x AA for body text

PALETTE_EVENTS = (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange)


# ------------------------------------------------------------------------------------------- colour maths ----


def _channel(c: float) -> float:
    c /= 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: QColor | str) -> float:
    """WCAG relative luminance (0 black .. 1 white)."""
    c = QColor(color)
    return 0.2126 * _channel(c.red()) + 0.7152 * _channel(c.green()) + 0.0722 * _channel(c.blue())


def contrast(a: QColor | str, b: QColor | str) -> float:
    """WCAG contrast ratio of two colours (1 .. 21)."""
    la, lb = luminance(a), luminance(b)
    hi, lo = max(la, lb), min(la, lb)
    return (hi + 0.05) / (lo + 0.05)


def mix(a: QColor | str, b: QColor | str, t: float) -> QColor:
    """``a`` moved a fraction ``t`` (0..1) of the way to ``b``."""
    ca, cb = QColor(a), QColor(b)
    return QColor(round(ca.red() + (cb.red() - ca.red()) * t), round(ca.green() + (cb.green() - ca.green()) * t),
                  round(ca.blue() + (cb.blue() - ca.blue()) * t))


def readable(fg: QColor | str, bg: QColor | str, minimum: float = AA_NORMAL) -> QColor:
    """``fg``, or the closest colour toward black or white (whichever ``bg`` contrasts more with) that reaches
    ``minimum`` contrast on ``bg``."""
    fg, bg = QColor(fg), QColor(bg)
    if contrast(fg, bg) >= minimum:
        return fg
    target = QColor("black") if contrast("black", bg) >= contrast("white", bg) else QColor("white")
    for step in range(1, 21):
        candidate = mix(fg, target, step / 20)
        if contrast(candidate, bg) >= minimum:
            return candidate
    return target


def on_color(bg: QColor | str, minimum: float = AA_NORMAL) -> tuple[QColor, QColor]:
    """(background, text) for a filled label such as the state pill: white text, the background darkened until
    the pair is readable."""
    bg = QColor(bg)
    for step in range(0, 21):
        candidate = mix(bg, "black", step / 20)
        if contrast("white", candidate) >= minimum:
            return candidate, QColor("white")
    return QColor("black"), QColor("white")


def css(color: QColor) -> str:
    return QColor(color).name()


# ------------------------------------------------------------------------------------------------ the theme ----

# Hues, chosen once for a light and once for a dark palette; `readable` guarantees the contrast on top.
_LIGHT = {
    "user": "#1f5fa8", "assistant": "#6a3fa0", "good": "#23703a", "error": "#b3261e", "warning": "#8a5a00",
    "info": "#1f5fa8", "series": ("#2f6fd0", "#2e9d57", "#8a9099", "#d08a1c"),
}
_DARK = {
    "user": "#8ab8ff", "assistant": "#c9a6ff", "good": "#7fd496", "error": "#ff8a80", "warning": "#ffc866",
    "info": "#8ab8ff", "series": ("#6aa0ff", "#5cd08a", "#a0a6ae", "#f0b050"),
}
STATE_HUES = {
    "idle": "#8a8f98", "listening": "#2f6fd0", "user_speaking": "#2e9d57", "thinking": "#d08a1c",
    "speaking": "#7d4cc2", "interrupted": "#c63b32", "loading": "#5b6470", "muted": "#8a8f98",
    "push_to_talk": "#2f6fd0", "getting_ready": "#5b6470",
}


@dataclass(frozen=True)
class Theme:
    dark: bool
    base: QColor                 # transcript background (palette Base)
    window: QColor               # panels (palette Window)
    text: QColor                 # body text on bubbles
    window_text: QColor
    user_bg: QColor
    user_accent: QColor
    assistant_bg: QColor
    assistant_accent: QColor
    user_muted: QColor           # time stamps, live text, placeholders on the user bubble
    assistant_muted: QColor
    unheard: QColor              # the never-heard part of an answer (on the assistant bubble)
    good: QColor                 # "first audio after ..." on the assistant bubble
    bad: QColor                  # "interrupted" on the assistant bubble
    placeholder: QColor          # on base
    muted: QColor                # secondary text on window
    latency: QColor              # the latency summary on window
    record: QColor               # "● recording" on window
    chart_bg: QColor
    plot_bg: QColor
    grid: QColor
    axis_text: QColor            # on chart_bg
    band_bg: QColor
    meter_bg: QColor
    meter_text: QColor           # on window (the dB figure beside the bar)
    meter_peak: QColor
    series: tuple[QColor, ...]
    states: dict[str, tuple[QColor, QColor]] = field(default_factory=dict)      # state -> (pill bg, pill text)
    banners: dict[str, tuple[QColor, QColor, QColor]] = field(default_factory=dict)  # level -> (bg, text, border)

    def state(self, name: str) -> tuple[QColor, QColor]:
        return self.states.get(name) or on_color(STATE_HUES["idle"])

    def text_pairs(self) -> dict[str, tuple[QColor, QColor]]:
        """Every (text colour, background) pair the widgets draw, by name."""
        pairs = {
            "user body": (self.text, self.user_bg), "assistant body": (self.text, self.assistant_bg),
            "user name": (self.user_accent, self.user_bg), "assistant name": (self.assistant_accent,
                                                                            self.assistant_bg),
            "user time/live text": (self.user_muted, self.user_bg),
            "assistant time": (self.assistant_muted, self.assistant_bg),
            "unheard": (self.unheard, self.assistant_bg), "latency in bubble": (self.good, self.assistant_bg),
            "interrupted": (self.bad, self.assistant_bg), "placeholder": (self.placeholder, self.base),
            "panel detail": (self.muted, self.window), "latency label": (self.latency, self.window),
            "recording label": (self.record, self.window), "chart axis/legend": (self.axis_text, self.chart_bg),
            "meter figure": (self.meter_text, self.window), "panel text": (self.window_text, self.window),
        }
        for name, (bg, fg) in self.states.items():
            pairs[f"state pill {name}"] = (fg, bg)
        for level, (bg, fg, _border) in self.banners.items():
            pairs[f"{level} banner"] = (fg, bg)
        return pairs


_CACHE: dict[int, Theme] = {}


def is_dark(palette: QPalette) -> bool:
    return luminance(palette.color(QPalette.ColorRole.Window)) < luminance(
        palette.color(QPalette.ColorRole.WindowText))


def theme_for(palette: QPalette) -> Theme:
    key = palette.cacheKey()
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    theme = _build(palette)
    if len(_CACHE) > 32:
        _CACHE.clear()
    _CACHE[key] = theme
    return theme


def _build(palette: QPalette) -> Theme:
    role = QPalette.ColorRole
    dark = is_dark(palette)
    hues = _DARK if dark else _LIGHT
    base, window = palette.color(role.Base), palette.color(role.Window)
    text, window_text = palette.color(role.Text), palette.color(role.WindowText)
    tint = 0.22 if dark else 0.08
    user_bg = mix(base, hues["user"], tint)
    assistant_bg = mix(base, hues["assistant"], tint)
    user_muted = readable(mix(text, user_bg, 0.45), user_bg)
    assistant_muted = readable(mix(text, assistant_bg, 0.45), assistant_bg)
    chart_bg = mix(window, base, 0.5)
    plot_bg = base
    banners = {}
    for level in ("error", "warning", "info"):
        hue = QColor(hues[level])
        bg = mix(window, hue, 0.22) if dark else mix(base, hue, 0.10)
        banners[level] = (bg, readable(mix(text, hue, 0.6) if dark else hue, bg), mix(bg, hue, 0.6))
    return Theme(
        dark=dark, base=base, window=window, text=readable(text, user_bg), window_text=readable(window_text, window),
        user_bg=user_bg, user_accent=readable(hues["user"], user_bg),
        assistant_bg=assistant_bg, assistant_accent=readable(hues["assistant"], assistant_bg),
        user_muted=user_muted, assistant_muted=assistant_muted,
        unheard=readable(mix(text, assistant_bg, 0.5), assistant_bg),
        good=readable(hues["good"], assistant_bg), bad=readable(hues["error"], assistant_bg),
        placeholder=readable(mix(text, base, 0.45), base),
        muted=readable(mix(window_text, window, 0.4), window),
        latency=readable(hues["good"], window), record=readable(hues["error"], window),
        chart_bg=chart_bg, plot_bg=plot_bg, grid=mix(plot_bg, text, 0.12),
        axis_text=readable(mix(text, chart_bg, 0.35), chart_bg), band_bg=mix(plot_bg, text, 0.08),
        meter_bg=mix(window, text, 0.10), meter_text=readable(window_text, window), meter_peak=mix(window, text, 0.8),
        series=tuple(QColor(c) for c in hues["series"]),
        states={name: on_color(hue) for name, hue in STATE_HUES.items()},
        banners=banners,
    )


def restyle_tree(root) -> None:
    """Re-apply the theme to ``root`` and every widget under it that styles itself (has ``restyle()``). Called by
    a window when its palette changes: widgets with their own style sheet do not get the palette event."""
    from PySide6.QtWidgets import QWidget

    for w in [root, *root.findChildren(QWidget)]:
        restyle = getattr(w, "restyle", None)
        if callable(restyle):
            restyle()
        w.update()


def widget_theme(widget) -> Theme:
    """The theme for a widget: from its window's palette (the system's, or one set on the window), never from the
    widget's own palette, which its own style sheet alters."""
    from PySide6.QtWidgets import QApplication

    window = widget.window()
    palette = window.palette() if window is not None and window is not widget else QApplication.palette()
    return theme_for(palette)


# ------------------------------------------------------------------------------------------------ palettes ----


def dark_palette() -> QPalette:
    """A dark palette like the ones desktop environments hand to Qt (used for the dark screenshots and tests, and
    nothing else: the app always takes the system's)."""
    p = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    colors = {
        role.Window: "#2b2d31", role.WindowText: "#e6e6e6", role.Base: "#1e1f22", role.AlternateBase: "#26282b",
        role.Text: "#e6e6e6", role.Button: "#33353a", role.ButtonText: "#e6e6e6", role.BrightText: "#ff6e6e",
        role.Highlight: "#3d6fb5", role.HighlightedText: "#ffffff", role.ToolTipBase: "#33353a",
        role.ToolTipText: "#e6e6e6", role.PlaceholderText: "#9a9ca0", role.Link: "#8ab8ff", role.Light: "#4a4d52",
        role.Midlight: "#3c3f44", role.Mid: "#2f3135", role.Dark: "#1a1b1e", role.Shadow: "#000000",
    }
    for r, c in colors.items():
        p.setColor(r, QColor(c))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(group.Disabled, r, QColor("#7c7e82"))
    return p


def light_palette() -> QPalette:
    """A light palette (Fusion's standard one)."""
    from PySide6.QtWidgets import QStyleFactory

    style = QStyleFactory.create("Fusion")
    return style.standardPalette()
