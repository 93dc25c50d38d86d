"""What a notice from the engine or the audio layer means to somebody who is not an engineer.

:func:`plain_notice` turns a notice code (the ``kind`` of an engine ``warning``/``error`` event, the ``code`` of an
audio or session one, or a turn decision) into one plain sentence for the notification banner, and keeps the
engineering text as the banner's *details*. It returns ``None`` for the sentence when the notice is for engineers
only (it then goes to the log and the engineering-details panel, never to a banner): normal life-cycle reports,
rare internal recoveries, and turn decisions (a decision such as ``el``/"ignore" must never reach the user).

The main window calls it for every ``warning``/``error`` event, e.g.::

    sentence, details = plain_notice(d.get("kind") or d.get("code") or "", level, d.get("message", ""),
                                     where=d.get("where"), source=d.get("source"), count=d.get("count"))
"""

from __future__ import annotations

import re
from typing import Any

# code -> sentence (None: log / details panel only). Sentences say what happened, what it means for the user and,
# where there is something to do, what to do.
SENTENCES: dict[str, str | None] = {
    # engine
    "slow_step": "This computer is busy, so Parley may react a little late while it talks.",
    "empty_reply": "Parley had no answer to that. Try asking again in other words.",
    "out_of_memory": ("Parley ran out of memory and could not finish. Close other programs, or choose a smaller "
                      "model or precision in Settings."),
    "crash": ("The conversation stopped because of an internal error. Press Start listening to carry on; if it "
              "happens again, restart Parley."),
    "vad": "Parley had trouble telling speech from silence for a moment. It keeps listening.",
    "cancelled": None,
    "drain_limit": None,
    "generation_done": None,
    "conversation_reset": None,
    # audio (core/audio/audio_io.py)
    "playback_starved": ("Parley's voice had short gaps: this computer prepares speech more slowly than it "
                         "plays."),
    "output_underflow": "The sound may have crackled: the computer was too busy to keep the speakers supplied.",
    "input_overflow": ("Parley may have missed some of what you said: the computer was too busy to keep up with "
                       "the microphone."),
    "input_ring_overflow": ("Parley may have missed some of what you said: the computer was too busy to keep up "
                            "with the microphone."),
    "playback_overflow": None,
    "playback_reset": None,
    "device_lost": "The microphone or the speakers went away. Parley is trying to reconnect…",
    "reopened": "Sound is working again.",
    "device_fallback": ("The microphone or speakers chosen in Settings were not found, so Parley uses the "
                        "system's default ones."),
    "worker_failed": "Sound stopped because of an internal error. Press Start listening to try again.",
    "started": None,
    "first_input": None,
    "aec_realigned": None,
    # session recording (core/session/recorder.py)
    "recording_stopped": ("Recording stopped because the recording folder could not be written. What was "
                          "recorded until then is kept."),
}

_AUDIO_STOPPED = ("Sound has stopped and could not be restarted. Check that the microphone and speakers are "
                  "connected, then press Start listening.")
_DISK_FULL = "Recording stopped because the disk is full. What was recorded until then is kept."
_BACKEND = {
    "listen": "Parley could not make out what you just said. Please say it again.",
    "reply": "Parley could not finish its answer. Please ask again.",
    "vad": SENTENCES["vad"],
}
_BACKEND_OTHER = "Something went wrong inside Parley. It carries on with the next thing you say."
_UNKNOWN_ERROR = "Something went wrong. The details below help if you report it."
_COMMAND = "Parley could not do that just now. Please try again."
_SETTINGS = "A setting could not be applied while Parley runs; it applies the next time Parley starts."
_CODE_WORD = re.compile(r"\b(el|ss|cl|vad|aec|underflow|overflow|ms)\b")
TURN_DECISIONS = {"cl", "ss", "el", "keep listening", "answer", "ignore"}


def plain_notice(kind: str, level: str, technical_message: str = "", *, where: str | None = None,
                 source: str | None = None, count: int | None = None, **_ignored: Any) -> tuple[str | None, str]:
    """(sentence for the user or None, details for engineers) of one notice.

    ``kind``: the engine event's ``kind`` or the audio/session ``code`` (``"turn_decision"`` for a decision);
    ``level``: ``info``/``warning``/``error``; ``technical_message``: the event's own message, kept as details.
    """
    kind = (kind or "").strip()
    level = level if level in ("info", "warning", "error") else "warning"
    details = _details(kind, technical_message, where=where, source=source, count=count)
    if kind in ("turn_decision", "decision") or kind in TURN_DECISIONS:
        return None, details
    if kind == "stopped":
        # the audio layer's life-cycle "stopped" (a normal stop) is status; as an error, sound is gone
        return (_AUDIO_STOPPED if level == "error" else None), details
    if kind == "recording_stopped" and _disk_full(technical_message):
        return _DISK_FULL, details
    if kind == "backend":
        return _BACKEND.get(where or "", _BACKEND_OTHER), details
    if where == "command":
        return _COMMAND, details
    if source == "settings":
        return _SETTINGS, details
    if kind in SENTENCES:
        return SENTENCES[kind], details
    # Unknown: an error is still worth a (generic) sentence; any other unknown notice is for engineers.
    return (_UNKNOWN_ERROR if level == "error" else None), details


def _disk_full(message: str) -> bool:
    m = message.lower()
    return "no space" in m or "disk full" in m or "disk quota" in m or "enospc" in m


def _details(kind: str, message: str, *, where: str | None, source: str | None, count: int | None) -> str:
    """The engineering text: the event's own message, then where it came from (code, step, layer)."""
    text = (message or "").strip()
    if count and str(count) not in text:
        text += f" ({count} times)"
    origin = ", ".join(p for p in (f"code {kind}" if kind else "", f"in {where}" if where else "",
                                   f"from {source}" if source else "") if p)
    return f"{text} [{origin}]" if origin and text else (text or origin)


def is_jargon_free(sentence: str) -> bool:
    """A guard for the tests: no decision codes, no counters, no code-like words."""
    low = sentence.lower()
    return ("decision" not in low and "_" not in sentence and "since last report" not in low
            and not _CODE_WORD.search(sentence))
