"""Conversation scripts: what a scripted user says, when, in which voice, and what must happen (JSON).

See docs/conversations.md for the format. :func:`load_script` reads and checks a file (a one-line
:class:`ScriptError` names the file, the utterance and the problem); :func:`parse_script` does the same for a dict.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.audio.room import NOMINAL_SPEECH_DBFS

EXPECTATIONS = ("answered", "ignored", "interrupts", "joins_previous", "continued")
ANCHORS = ("previous_end", "answer_start", "answer_end")
SOUNDS = ("cough",)
DEFAULT_TIMEOUT_S = {"answer_start": 15.0, "answer_end": 60.0}
_PAUSE = re.compile(r"<\s*pause\s+([0-9]*\.?[0-9]+)\s*>", re.IGNORECASE)


class ScriptError(ValueError):
    """A conversation script that cannot be used; the message is one line."""


@dataclass(frozen=True)
class Timing:
    """When an utterance starts. ``at_s``: at that session time. ``after``: ``delay_s`` after an anchor:
    ``previous_end`` (the previous utterance ended), ``answer_start`` (the assistant is audible, at or after the end
    of the previous utterance), ``answer_end`` (the assistant went silent after being audible since then). An
    answer anchor that does not come within ``timeout_s`` of the previous utterance's end is given up: the
    utterance is spoken then, and the timeline says so. Never before the previous utterance has ended."""

    after: str | None = "previous_end"
    delay_s: float = 0.0
    at_s: float | None = None
    timeout_s: float | None = None

    @property
    def effective_timeout_s(self) -> float | None:
        if self.after in DEFAULT_TIMEOUT_S:
            return self.timeout_s if self.timeout_s is not None else DEFAULT_TIMEOUT_S[self.after]
        return None

    def to_dict(self) -> dict[str, Any]:
        if self.at_s is not None:
            return {"at_s": self.at_s}
        d: dict[str, Any] = {"after": self.after, "delay_s": self.delay_s}
        if self.effective_timeout_s is not None:
            d["timeout_s"] = self.effective_timeout_s
        return d


@dataclass(frozen=True)
class Part:
    """A stretch of speech without a pause: its text and the silence before it (0 for the first part)."""

    text: str
    pause_before_s: float = 0.0


@dataclass(frozen=True)
class Utterance:
    id: str
    text: str                     # as written, pauses included; "" for a sound
    expect: str
    timing: Timing
    voice: str = "en-us"
    speed: int = 160              # words per minute
    level_db: float = 0.0         # relative to the script's level
    sound: str | None = None      # "cough" instead of speech
    duration_s: float = 0.0       # a sound's length
    keywords_any: tuple[str, ...] = ()
    keywords_all: tuple[str, ...] = ()
    label: str = ""
    parts: tuple[Part, ...] = ()

    @property
    def spoken_text(self) -> str:
        """The words without the pause marks (the reference for WER)."""
        return " ".join(p.text for p in self.parts if p.text)

    @property
    def has_keywords(self) -> bool:
        return bool(self.keywords_any or self.keywords_all)


@dataclass(frozen=True)
class ConversationScript:
    name: str
    utterances: tuple[Utterance, ...]
    description: str = ""
    level_dbfs: float = NOMINAL_SPEECH_DBFS
    tail_s: float = 2.0             # quiet after the last utterance (and its answer) before the script is done
    answer_timeout_s: float = 45.0  # how long to wait for the last utterance's answer to start and finish
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def voices(self) -> set[str]:
        return {u.voice for u in self.utterances if u.sound is None}


def split_pauses(text: str) -> tuple[Part, ...]:
    """``"What is the capital of <pause 1.2> Germany?"`` -> the parts with the silence before each."""
    parts, pause, pos = [], 0.0, 0
    for m in _PAUSE.finditer(text):
        piece = text[pos:m.start()].strip()
        if piece:
            parts.append(Part(piece, pause))
            pause = 0.0
        pause += float(m.group(1))
        pos = m.end()
    tail = text[pos:].strip()
    if tail:
        parts.append(Part(tail, pause))
    if "<" in "".join(p.text for p in parts) or ">" in "".join(p.text for p in parts):
        raise ValueError("a pause is written <pause SECONDS>, e.g. <pause 1.2>")
    if not parts:
        raise ValueError("no words to say")
    if parts[0].pause_before_s:
        raise ValueError("an utterance cannot start with a pause (use its timing)")
    return tuple(parts)


_UTTERANCE_KEYS = {"id", "text", "sound", "voice", "speed", "level_db", "timing", "expect", "keywords", "label",
                   "duration_s"}
_SCRIPT_KEYS = {"name", "description", "level_dbfs", "voice", "speed", "tail_s", "answer_timeout_s", "utterances",
                "notes"}


def _number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{what} must be within [{low}, {high}], not {value!r}")
    return float(value)


def _words(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ValueError(f"{what} must be a list of non-empty strings")
    return tuple(w.strip() for w in value)


def _timing(raw: Any, index: int) -> Timing:
    if raw is None:
        return Timing(after=None, at_s=0.5) if index == 0 else Timing("previous_end", 1.0)
    if not isinstance(raw, dict):
        raise ValueError(f"timing must be an object, not {raw!r}")
    unknown = set(raw) - {"after", "delay_s", "at_s", "timeout_s"}
    if unknown:
        raise ValueError(f"timing has unknown keys {sorted(unknown)}")
    if "at_s" in raw:
        if set(raw) - {"at_s"}:
            raise ValueError("timing with at_s takes nothing else")
        return Timing(after=None, at_s=_number(raw["at_s"], "timing.at_s", 0.0))
    after = raw.get("after")
    if after not in ANCHORS:
        raise ValueError(f"timing.after must be one of {', '.join(ANCHORS)} (or give at_s), not {after!r}")
    delay = _number(raw.get("delay_s", 0.0), "timing.delay_s", 0.0)
    timeout = raw.get("timeout_s")
    if timeout is not None:
        if after == "previous_end":
            raise ValueError("timing.timeout_s is for answer_start / answer_end")
        timeout = _number(timeout, "timing.timeout_s", 0.0)
    return Timing(after=after, delay_s=delay, timeout_s=timeout)


def _utterance(raw: Any, index: int, defaults: dict[str, Any]) -> Utterance:
    if not isinstance(raw, dict):
        raise ValueError("an utterance must be an object")
    unknown = set(raw) - _UTTERANCE_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (known: {', '.join(sorted(_UTTERANCE_KEYS))})")
    uid = str(raw.get("id") or f"u{index + 1}")
    sound = raw.get("sound")
    text = raw.get("text", "")
    if sound is not None:
        if sound not in SOUNDS:
            raise ValueError(f"sound must be one of {', '.join(SOUNDS)}, not {sound!r}")
        if text:
            raise ValueError("give text or sound, not both")
        duration = _number(raw.get("duration_s", 0.3), "duration_s", 0.05, 2.0)
        parts: tuple[Part, ...] = (Part(""),)
    else:
        if "duration_s" in raw:
            raise ValueError("duration_s is for sounds")
        duration = 0.0
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string (or give a sound)")
        parts = split_pauses(text)
    expect = raw.get("expect")
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {', '.join(EXPECTATIONS)}, not {expect!r}")
    kw = raw.get("keywords") or {}
    if not isinstance(kw, dict) or set(kw) - {"any", "all"}:
        raise ValueError('keywords must be an object {"any": [...], "all": [...]}')
    kw_any, kw_all = _words(kw.get("any", []), "keywords.any"), _words(kw.get("all", []), "keywords.all")
    if (kw_any or kw_all) and expect in ("ignored", "continued"):
        raise ValueError(f"keywords make no sense for an utterance that is {expect}")
    voice = raw.get("voice", defaults.get("voice", "en-us"))
    if not isinstance(voice, str) or not voice:
        raise ValueError(f"voice must be an espeak-ng voice name, not {voice!r}")
    speed = _number(raw.get("speed", defaults.get("speed", 160)), "speed", 80, 450)
    level = _number(raw.get("level_db", 0.0), "level_db", -40, 20)
    return Utterance(id=uid, text=text if sound is None else "", expect=expect, timing=_timing(raw.get("timing"), index),
                     voice=voice, speed=int(speed), level_db=level, sound=sound, duration_s=duration, keywords_any=kw_any,
                     keywords_all=kw_all, label=str(raw.get("label", "")), parts=parts)


def parse_script(data: Any, name: str = "script", path: str | None = None) -> ConversationScript:
    """A :class:`ConversationScript` from its JSON form; :class:`ScriptError` (one line) when it is not usable."""
    where = path or name
    if not isinstance(data, dict):
        raise ScriptError(f"{where}: a conversation script is a JSON object with 'utterances'")
    unknown = set(data) - _SCRIPT_KEYS
    if unknown:
        raise ScriptError(f"{where}: unknown keys {sorted(unknown)} (known: {', '.join(sorted(_SCRIPT_KEYS))})")
    raw_utts = data.get("utterances")
    if not isinstance(raw_utts, list) or not raw_utts:
        raise ScriptError(f"{where}: 'utterances' must be a non-empty list")
    defaults = {k: data[k] for k in ("voice", "speed") if k in data}
    utts = []
    for i, raw in enumerate(raw_utts):
        try:
            utts.append(_utterance(raw, i, defaults))
        except ValueError as exc:
            uid = raw.get("id") if isinstance(raw, dict) and raw.get("id") else f"#{i + 1}"
            raise ScriptError(f"{where}: utterance {uid}: {exc}") from None
    ids = [u.id for u in utts]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ScriptError(f"{where}: utterance ids must be unique ({', '.join(dup)} repeated)")
    for i, u in enumerate(utts):
        follower = utts[i + 1] if i + 1 < len(utts) else None
        if u.expect == "joins_previous" and (i == 0 or utts[i - 1].sound is not None):
            raise ScriptError(f"{where}: utterance {u.id}: joins_previous needs a spoken utterance before it")
        if u.expect == "continued" and (follower is None or follower.expect != "joins_previous"):
            raise ScriptError(f"{where}: utterance {u.id}: 'continued' is for the utterance before a "
                              "joins_previous one")
        if follower is not None and follower.expect == "joins_previous" and u.expect != "continued":
            raise ScriptError(f"{where}: utterance {u.id}: the next one joins it, so expect must be 'continued'")
    try:
        level = _number(data.get("level_dbfs", NOMINAL_SPEECH_DBFS), "level_dbfs", -60, -3)
        tail = _number(data.get("tail_s", 2.0), "tail_s", 0.0, 60)
        timeout = _number(data.get("answer_timeout_s", 45.0), "answer_timeout_s", 1.0, 600)
    except ValueError as exc:
        raise ScriptError(f"{where}: {exc}") from None
    return ConversationScript(name=str(data.get("name") or name), utterances=tuple(utts),
                              description=str(data.get("description", "")), level_dbfs=level, tail_s=tail,
                              answer_timeout_s=timeout, path=path,
                              extra={k: data[k] for k in ("notes",) if k in data})


def load_script(path: str | Path) -> ConversationScript:
    """Read and check a script file (see :func:`parse_script`)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScriptError(f"{p}: cannot read it ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ScriptError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    return parse_script(data, name=p.stem, path=str(p))
