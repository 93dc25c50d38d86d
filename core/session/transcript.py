"""Per-turn summaries of an event stream, and the transcript.md written from them.

The same summary feeds the transcript, the replay comparison and the session browser, so they always agree.

Text events, as ``core.engine.engine`` emits them: ``user_text`` with ``partial=True`` carries the whole hypothesis
so far (it replaces the turn's user text); without it, ``text`` is a new piece appended to it (``final`` only says
the transcript is now final). ``assistant_text`` pieces are appended. ``interruption`` (emitted on the barge-in turn)
names the cut-off answer's turn in ``reply_turn`` and carries ``heard_text``/``unheard_text``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

log = logging.getLogger(__name__)


@dataclass
class TurnSummary:
    turn: int
    t_start: float | None = None                # first event of the turn
    decisions: list[str] = field(default_factory=list)   # every turn_decision state, in order
    user_text: str = ""
    user_final: bool = False
    assistant_text: str = ""
    unheard_text: str = ""
    interrupted: bool = False
    latencies: dict[str, float] = field(default_factory=dict)  # first_audio_ms, first_played_ms, ...
    first_user_t: float | None = None
    first_assistant_t: float | None = None
    warnings: list[str] = field(default_factory=list)
    heard: str | None = None                      # heard part of a cut-off answer, as the engine computed it

    @property
    def decision(self) -> str | None:
        """The decision that closed the turn: the last non-``cl`` one (``cl`` if that is all there was)."""
        final = [d for d in self.decisions if d != "cl"]
        if final:
            return final[-1]
        return self.decisions[-1] if self.decisions else None

    @property
    def heard_text(self) -> str:
        if self.heard is not None:
            return self.heard
        text = self.assistant_text
        if self.unheard_text and text.endswith(self.unheard_text):
            return text[: len(text) - len(self.unheard_text)]
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn, "t_start": self.t_start, "decision": self.decision,
            "decisions": [d for d in self.decisions if d != "cl"],
            "user_text": self.user_text, "assistant_text": self.assistant_text,
            "interrupted": self.interrupted, "unheard_text": self.unheard_text, "latencies": dict(self.latencies),
        }


def summarize_turns(events: Iterable[dict[str, Any]]) -> list[TurnSummary]:
    """Group events (dicts as in events.jsonl) by turn id, in order of first appearance."""
    turns: dict[int, TurnSummary] = {}
    for ev in events:
        try:
            turn = int(ev.get("turn", 0))
            etype = ev.get("type")
            t = float(ev.get("t", 0.0))
        except (TypeError, ValueError):
            continue
        s = turns.get(turn)
        if s is None:
            s = turns[turn] = TurnSummary(turn=turn, t_start=t)
        if etype == "turn_decision":
            state = ev.get("state")
            if isinstance(state, str):
                s.decisions.append(state)
        elif etype == "user_text":
            text = str(ev.get("text") or "")
            if s.first_user_t is None and text:
                s.first_user_t = t
            if ev.get("partial") or ev.get("replace"):
                s.user_text = text
            else:
                s.user_text += text
            s.user_final = s.user_final or bool(ev.get("final"))
        elif etype == "assistant_text":
            text = str(ev.get("text") or "")
            if s.first_assistant_t is None and text:
                s.first_assistant_t = t
            s.assistant_text += text
        elif etype == "interruption":
            target = s
            try:
                reply_turn = int(ev.get("reply_turn", turn))
            except (TypeError, ValueError):
                reply_turn = turn
            if reply_turn != turn:
                target = turns.get(reply_turn) or turns.setdefault(reply_turn, TurnSummary(turn=reply_turn, t_start=t))
            target.interrupted = True
            target.unheard_text = str(ev.get("unheard_text") or "")
            if "heard_text" in ev:
                target.heard = str(ev.get("heard_text") or "")
        elif etype == "latency":
            for key, value in ev.items():
                if key.endswith("_ms") and isinstance(value, (int, float)):
                    s.latencies[key] = float(value)
        elif etype in ("warning", "error"):
            msg = ev.get("message") or ev.get("text")
            if msg:
                s.warnings.append(f"{etype}: {msg}")
    return list(turns.values())


def read_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Events of an events.jsonl; a torn or garbled line is skipped (logged), never fatal."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                log.warning("%s:%d: unreadable event line skipped", path, lineno)
                continue
            if isinstance(ev, dict) and "type" in ev:
                yield ev


def _clock(t: float | None) -> str:
    if t is None:
        return "?"
    m, s = divmod(max(0.0, t), 60.0)
    return f"{int(m)}:{s:04.1f}"


def render_transcript(turns: list[TurnSummary], meta: dict[str, Any] | None = None) -> str:
    meta = meta or {}
    lines = [f"# Parley session {meta.get('session_id') or ''}".rstrip(), ""]
    details = []
    if meta.get("start_time"):
        details.append(f"started {meta['start_time']}")
    if meta.get("profile"):
        details.append(f"profile {meta['profile']}")
    if meta.get("backbone"):
        details.append(f"backbone {meta['backbone']}")
    if meta.get("voice"):
        details.append(f"voice {meta['voice']}")
    if details:
        lines += ["_" + ", ".join(details) + "_", ""]
    for s in turns:
        if not (s.user_text or s.assistant_text):
            continue
        if s.user_text.strip():
            note = "" if s.decision in (None, "ss") else f" _(decision: {s.decision})_"
            lines.append(f"**User** [{_clock(s.first_user_t or s.t_start)}, turn {s.turn}]: {s.user_text.strip()}{note}")
            lines.append("")
        if s.assistant_text:
            head = f"**Assistant** [{_clock(s.first_assistant_t)}, turn {s.turn}]: "
            if s.interrupted and s.unheard_text:
                lines.append(head + s.heard_text.rstrip() + f" ~~{s.unheard_text.strip()}~~ _(interrupted; not heard)_")
            elif s.interrupted:
                lines.append(head + s.assistant_text + " _(interrupted)_")
            else:
                lines.append(head + s.assistant_text.strip())
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def transcript_from_events_file(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> str:
    return render_transcript(summarize_turns(read_events(path)), meta)


def events_path(session: str | os.PathLike) -> Path:
    return Path(session) / "events.jsonl"
